"""--backend ray: the lab's sweeps and compare on a local Ray instance started by the test, with the
same numbers as the process pool and every run in the study's store (each task trains into a shard).

Needs the [ray] extra (`make test-all` installs it); skipped, saying so, without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.data import split
from graddoctor.errors import GradDoctorError
from graddoctor.lab import sweep
from graddoctor.train.pool import parallel_map
from graddoctor.train.spec import NetSpec, TrainSpec, run_spec

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

TINY = dict(net=NetSpec(depth=3, width=8), train=TrainSpec(steps=6, lr=0.05), data="gaussian")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def without_seconds(metrics):
    return {k: v for k, v in metrics.items() if k != "seconds"}


def test_a_sweep_on_ray_has_the_process_pools_numbers_and_every_run_in_its_store(tmp_path, local_ray):
    specs = [run_spec("a", seed=0, **TINY), run_spec("b", seed=1, **TINY), run_spec("c", seed=2, **TINY)]
    local = sweep.run_sweep(specs, tmp_path / "local.db", jobs=2, progress=False)
    remote = sweep.run_sweep(specs, tmp_path / "ray.db", backend="ray", progress=False)
    assert [without_seconds(r.metrics) for r in local.records] == [without_seconds(r.metrics) for r in remote.records]
    for spec in specs:
        a, b = graddoctor.load(tmp_path / "local.db", name=spec.name), graddoctor.load(tmp_path / "ray.db", name=spec.name)
        assert np.array_equal(a.steps, b.steps) and a.layers == b.layers and sorted(a.stats) == sorted(b.stats)
        for stat in a.stats:
            assert np.array_equal(a.stat_matrix(stat), b.stat_matrix(stat), equal_nan=True), (spec.name, stat)
    again = sweep.run_sweep(specs, tmp_path / "ray.db", backend="ray", progress=False)  # resumed: nothing to train
    import sqlite3

    with sqlite3.connect(tmp_path / "ray.db") as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 3
    assert [r.metrics for r in again.records] == [r.metrics for r in remote.records]


MODEL_FILE = """
from torch import nn


def build():
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
"""


def test_compare_on_ray_gives_the_same_table_as_the_process_pool(tmp_path, local_ray):
    (tmp_path / "tiny_model.py").write_text(MODEL_FILE)
    tiny = f"{tmp_path / 'tiny_model.py'}:build"  # a MODEL spec: each worker loads the file itself
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(120) % 3
    data = split("blobs", torch.randn(120, 12, generator=gen) + 2.0 * nn.functional.one_hot(y, 12).float(), y)
    kw = dict(remedies=["lower_lr"], steps=10, seeds=2, lr=0.05)
    local = graddoctor.compare(tiny, data, jobs=2, store=tmp_path / "local.db", **kw).to_dict()
    remote = graddoctor.compare(tiny, data, backend="ray", store=tmp_path / "ray.db", **kw).to_dict()
    for d in (local, remote):  # wall time is the one thing that may differ
        d.pop("seconds"), d.pop("store")
        for v in d["variants"]:
            v["metrics"].pop("sec_per_step")
    assert local == remote
    with_runs = [graddoctor.load(tmp_path / "ray.db", name=n) for n in ("original/seed0", "lower_lr/seed1")]
    assert all(len(v.steps) == 10 for v in with_runs)


def test_a_failing_task_is_raised_naming_its_item(local_ray):
    def boom(x: int) -> int:  # defined here: pickled by value, as the test module is not importable on Ray's workers
        if x == 2:
            raise ValueError("bad item")
        return x

    with pytest.raises(GradDoctorError, match="Ray task for 2 failed.*bad item"):
        list(parallel_map(boom, [1, 2, 3], jobs=2, progress=False, backend="ray"))
