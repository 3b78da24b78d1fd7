"""Sweeps: seeded and deterministic, configs stored with the runs, resumable (finished runs are skipped)."""

from __future__ import annotations

import json
import sqlite3

import pytest

import graddoctor
from graddoctor.errors import ConfigError
from graddoctor.lab import sweep
from graddoctor.train.spec import NetSpec, RunSpec, TrainSpec, run_spec

TINY = dict(net=NetSpec(depth=3, width=8), train=TrainSpec(steps=4, lr=0.05), data="gaussian")


def test_grid_is_axes_times_seeds_named_and_tagged():
    specs = sweep.grid(RunSpec("base", **TINY), {"net.depth": [2, 3], "train.lr": [0.1]}, range(2), prefix="g/")
    assert [s.name for s in specs] == ["g/depth=2/lr=0.1/s0", "g/depth=2/lr=0.1/s1", "g/depth=3/lr=0.1/s0",
                                       "g/depth=3/lr=0.1/s1"]
    assert specs[2].net.depth == 3 and specs[2].tag("depth") == 3 and specs[3].seed == 1


def test_grid_refuses_an_unknown_axis():
    with pytest.raises(ConfigError, match="net.FIELD"):
        sweep.grid(RunSpec("base", **TINY), {"depthh": [1]}, range(1))


def test_same_seed_same_numbers_and_config_stored(tmp_path):
    specs = [run_spec("a", seed=3, **TINY), run_spec("b", seed=3, **TINY)]
    results = sweep.run_sweep(specs, tmp_path / "s.db", jobs=1, progress=False)
    a, b = (r.metrics for r in results.records)
    assert a["losses"] == b["losses"] and a["test_accuracy"] == b["test_accuracy"]
    assert graddoctor.load(tmp_path / "s.db", name="a").config["user"]["lab"]["seed"] == 3
    with sqlite3.connect(tmp_path / "s.db") as db:
        config = json.loads(db.execute("SELECT config_json FROM lab_runs WHERE name='a'").fetchone()[0])
    assert config["net"]["depth"] == 3 and config["train"]["steps"] == 4


def test_a_sweep_in_this_process_leaves_the_global_torch_rng_as_it_was(tmp_path):
    import torch

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    sweep.run_sweep([run_spec("a", seed=0, **TINY)], tmp_path / "s.db", jobs=1, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_finished_runs_are_skipped_and_changed_ones_retrained(tmp_path, monkeypatch):
    store = tmp_path / "s.db"
    sweep.run_sweep([run_spec("a", seed=0, **TINY), run_spec("b", seed=1, **TINY)], store, jobs=1, progress=False)
    trained = []
    real = sweep.train_run
    monkeypatch.setattr(sweep, "train_run", lambda spec, path: trained.append(spec.name) or real(spec, path))
    changed = run_spec("b", seed=1, net=NetSpec(depth=4, width=8), train=TINY["train"], data="gaussian")
    results = sweep.run_sweep([run_spec("a", seed=0, **TINY), changed, run_spec("c", seed=2, **TINY)], store,
                              jobs=1, progress=False)
    assert trained == ["b", "c"]
    assert [r.spec.name for r in results.records] == ["a", "b", "c"]


def test_duplicate_names_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unique"):
        sweep.run_sweep([run_spec("a", seed=0, **TINY)] * 2, tmp_path / "s.db", jobs=1, progress=False)


def test_a_small_conv_net_trains_on_digits_images(tmp_path):
    spec = run_spec("conv", net=NetSpec(kind="conv", depth=3, width=4, norm="batch"), train=TrainSpec(steps=2), seed=0)
    metrics = sweep.run_sweep([spec], tmp_path / "s.db", jobs=1, progress=False).records[0].metrics
    assert metrics["test_accuracy"] is not None and not metrics["diverged"]
    view = graddoctor.load(tmp_path / "s.db", name="conv")
    assert [i.type for i in view.layer_info if i.kind == "param"][:2] == ["Conv2d", "BatchNorm2d"]


def test_warmup_ramps_the_learning_rate_and_clipping_shrinks_the_steps(tmp_path):
    specs = [run_spec(name, seed=0, net=TINY["net"], train=TrainSpec(steps=4, lr=0.1, warmup=4, clip=clip), data="gaussian")
             for name, clip in (("free", None), ("clipped", 1e-3))]
    sweep.run_sweep(specs, tmp_path / "s.db", jobs=1, progress=False)
    free, clipped = (graddoctor.load(tmp_path / "s.db", name=n) for n in ("free", "clipped"))
    assert free.scalar("lr/group0").tolist() == pytest.approx([0.025, 0.05, 0.075, 0.1])
    layer = free.layers[0]
    assert clipped.stat("update_ratio_est", layer).max() < free.stat("update_ratio_est", layer).max() / 10


def test_two_worker_processes_give_the_numbers_of_one(tmp_path):
    specs = [run_spec(f"r{k}", seed=k, **TINY) for k in range(3)]
    one = sweep.run_sweep(specs, tmp_path / "one.db", jobs=1, progress=False)
    two = sweep.run_sweep(specs, tmp_path / "two.db", jobs=2, progress=False)
    for a, b in zip(one.records, two.records):
        assert a.spec == b.spec
        assert a.metrics["losses"] == b.metrics["losses"] and a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
        assert (a.view().stat("grad_norm", "0") == b.view().stat("grad_norm", "0")).all()


def test_a_sweep_interrupted_by_ctrl_c_resumes_with_the_unfinished_runs(tmp_path, monkeypatch):
    store = tmp_path / "s.db"
    specs = [run_spec(name, seed=k, **TINY) for k, name in enumerate("abc")]
    real = sweep.train_run

    def interrupted_at_b(spec, path):
        if spec.name == "b":
            real(spec, path)              # b's steps reach the store, then Ctrl-C before it is marked finished
            raise KeyboardInterrupt
        return real(spec, path)

    monkeypatch.setattr(sweep, "train_run", interrupted_at_b)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(specs, store, jobs=1, progress=False)
    assert set(sweep.finished(str(store))) == {"a"}
    trained = []
    monkeypatch.setattr(sweep, "train_run", lambda spec, path: trained.append(spec.name) or real(spec, path))
    results = sweep.run_sweep(specs, store, jobs=1, progress=False)
    assert trained == ["b", "c"]
    fresh = sweep.run_sweep([specs[1]], tmp_path / "fresh.db", jobs=1, progress=False).records[0]
    assert results.records[1].metrics["losses"] == fresh.metrics["losses"]
    assert results.records[1].view().steps.tolist() == fresh.view().steps.tolist()   # the retrained run, not the cut one


def test_an_unknown_backend_or_a_stray_ray_address_is_refused_before_anything_runs(tmp_path):
    specs = [run_spec("a", seed=0, **TINY)]
    with pytest.raises(ConfigError, match="backend must be one of process, ray; got 'dask'"):
        sweep.run_sweep(specs, tmp_path / "s.db", backend="dask", progress=False)
    with pytest.raises(ConfigError, match="ray_address='auto' is for backend='ray'"):
        sweep.run_sweep(specs, tmp_path / "s.db", ray_address="auto", progress=False)
    assert not (tmp_path / "s.db").exists()
