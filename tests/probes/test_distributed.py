"""graddoctor.watch under torch.distributed: 2 gloo processes on CPU, loopback only.

The test functions launch this file as a script on every rank (`python test_distributed.py
SCENARIO DIR` with RANK/WORLD_SIZE/MASTER_* set, as torchrun would); each rank writes what it saw
to DIR as JSON. A hang fails the test (every launch has a deadline, then the ranks are killed).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor

pytestmark = pytest.mark.slow  # every test here reads the ranks' results: 12 processes started at once, ~30 s

WORLD, PER_RANK, STEPS = 2, 8, 4
WATCH = {"every": 1, "hist_every": 2}
RTOL, ATOL = 1e-5, 1e-6


# -- the model and data, the same on one process and on two ------------------------------------


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight[0] = 0.0
        model[0].weight[0, 0] = 1.0  # unit 0 fires only on rank 1's samples (x0 > 0): alive, not dead
        model[0].bias[0] = 0.0
        model[0].weight[1] = 0.0
        model[0].bias[1] = -1.0      # unit 1 never fires anywhere: dead
        model[2].weight.mul_(4.0)    # some tanh outputs saturate
    return model


def make_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        x = torch.randn(WORLD * PER_RANK, 6, generator=g)
        x[:PER_RANK, 0] = -x[:PER_RANK, 0].abs()
        x[PER_RANK:, 0] = x[PER_RANK:, 0].abs()
        out.append((x, torch.randn(WORLD * PER_RANK, 2, generator=g)))
    return out


def train(model, data, rank: int = 0, world: int = 1, raise_at: int | None = None, **watch_kwargs):
    """Mean-reduced loss over each process's part of the batch: DDP and FSDP2 average the ranks'
    gradients, so the update equals one process's on the concatenated batch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, **watch_kwargs) as run:
        for step, (x, y) in enumerate(data):
            if step == raise_at:
                raise RuntimeError(f"boom on rank {rank}")
            loss = (model(x.chunk(world)[rank]) - y.chunk(world)[rank]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
    return run


# -- the ranks' side -----------------------------------------------------------------------------


def _error(fn) -> str | None:
    try:
        fn()
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def scenario_equal(rank: int, out: Path) -> dict:
    """DDP and FSDP2 runs, then the refusals, in one process group."""
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel as DDP

    data = make_data()
    result = {}
    # DDP with the exact update_ratio (a full copy), FSDP2 with the default estimate (each shard's sample)
    run = train(DDP(make_model()), data, rank, WORLD, store=out / "ddp.db", name="ddp", update_ratio="exact", **WATCH)
    result["ddp_path"] = run.path
    result["ddp_view"] = _error(run.view)
    for part in (data[:2], data[2:]):  # resume: every rank continues from rank 0's stored step
        train(DDP(make_model()), part, rank, WORLD, store=out / "resumed.db", name="resumed", resume=True, **WATCH)
    model = make_model()
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer)
    fully_shard(model)
    train(model, data, rank, WORLD, store=out / "fsdp.db", name="fsdp", **WATCH)
    result["files"] = sorted(p.name for p in out.iterdir() if p.suffix == ".db")
    every = 1 if rank == 0 else 2  # rank 1 would record other steps: refused on both ranks, no hang
    result["mismatch"] = _error(lambda: train(DDP(make_model()), data, rank, WORLD, store=out / "bad.db", every=every))
    store = out / "missing" / "x.db" if rank == 0 else out / "fine.db"
    result["unwritable"] = _error(lambda: train(DDP(make_model()), data, rank, WORLD, store=store))
    result["fsdp1"] = _error(lambda: graddoctor.watch(_fsdp1(), None))
    result["replicated_dtensor"] = _error(lambda: graddoctor.watch(_replicated_dtensor(), None))
    result["collectives"] = _collectives_per_step(rank, out, data)
    result["branch"] = _branch_collectives(rank, out, data)
    return result


def _replicated_dtensor() -> nn.Module:
    from torch.distributed.tensor import distribute_module, init_device_mesh

    return distribute_module(nn.Linear(2, 2), init_device_mesh("cpu", (WORLD,)))  # Replicate(): not FSDP2


def _collectives_per_step(rank: int, out: Path, data) -> list[int]:
    """graddoctor's collective calls during each optimizer step of a DDP run with every=2."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(make_model())
    return _counted(model, lambda step, x: model(x), rank, data + data[:1], store=out / "count.db", every=2)


class _Branch(nn.Module):
    """A ReLU (`extra`) that runs only when asked: on no rank at step 0, on rank 1 alone at step 1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.act, self.extra, self.head = nn.Linear(6, 4), nn.ReLU(), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor, extra: bool) -> torch.Tensor:
        h = self.act(self.fc(x))
        return self.head(self.extra(h) if extra else h)


def _branch_collectives(rank: int, out: Path, data) -> list[int]:
    """A layer that fires on one rank only, and whose per-unit vector first appears at step 1: no
    hang, one more gather at that step only (plain replicas: no DDP, which needs every rank's branch)."""
    model = _Branch()
    return _counted(model, lambda step, x: model(x, extra=step >= 2 or (step == 1 and rank == 1)), rank, data,
                    store=out / "branch.db", name="branch")


def _counted(model, forward, rank: int, data, **watch_kwargs) -> list[int]:
    """graddoctor's collective calls during each optimizer step of a watched run."""
    dist, calls, per_step = torch.distributed, [0], []
    originals = {name: getattr(dist, name) for name in ("all_gather", "all_gather_object", "all_reduce", "broadcast")}

    def counting(fn):
        def wrapper(*args, **kwargs):
            calls[0] += 1
            return fn(*args, **kwargs)
        return wrapper

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        for name, fn in originals.items():
            setattr(dist, name, counting(fn))
        with graddoctor.watch(model, opt, **watch_kwargs):
            opt.register_step_post_hook(lambda *a: (per_step.append(calls[0]), calls.__setitem__(0, 0)))
            calls[0] = 0
            for step, (x, y) in enumerate(data):
                loss = (forward(step, x.chunk(WORLD)[rank]) - y.chunk(WORLD)[rank]).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
    return per_step


def _fsdp1() -> nn.Module:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel(nn.Sequential(nn.Linear(2, 2)), device_id=torch.device("cpu"))


def scenario_compiled(rank: int, out: Path) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    data = make_data()
    model = make_model()
    compiled = torch.compile(DDP(model), backend="eager")
    compiled(data[0][0].chunk(WORLD)[rank]).sum().backward()
    err = _error(lambda: train(compiled, data, rank, WORLD, store=out / "compiled.db", name="c", **WATCH))
    torch._dynamo.reset()
    model = make_model()
    inner = DDP(torch.compile(model, backend="eager"))  # DDP around a compiled module, called once
    inner(data[0][0].chunk(WORLD)[rank]).sum().backward()
    err_inner = _error(lambda: train(inner, data, rank, WORLD, store=out / "inner.db", name="c", **WATCH))
    torch._dynamo.reset()
    model = make_model()  # the hooks are blind on rank 1 alone: every rank must stop, at once
    one = DDP(torch.compile(model, backend="eager")) if rank == 1 else DDP(model)
    one(data[0][0].chunk(WORLD)[rank]).sum().backward()
    err_one = _error(lambda: train(one, data, rank, WORLD, store=out / "one.db", name="c", **WATCH))
    return {"compiled": err, "inner": err_inner, "one_rank": err_one}


def scenario_raise(rank: int, out: Path, who: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    err = _error(lambda: train(DDP(make_model()), make_data(), rank, WORLD, raise_at=2 if rank == who else None,
                               store=out / "raise.db", name="raise", flush_seconds=0.05))
    return {"error": err}


def scenario_nowatch(rank: int, out: Path) -> dict:
    from graddoctor.probes import distributed

    distributed.TIMEOUT = timedelta(seconds=3)
    if rank == 1:
        return {"error": None}  # never calls watch
    return {"error": _error(lambda: graddoctor.watch(make_model(), None, store=out / "nowatch.db"))}


def worker(scenario: str, out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=20))
    try:
        if scenario.startswith("raise"):
            result = scenario_raise(rank, out, int(scenario[-1]))
        else:
            result = globals()[f"scenario_{scenario}"](rank, out)
    except Exception:
        result = {"crash": traceback.format_exc()}
    (out / f"{scenario}-{rank}.json").write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # a peer may be gone: do not wait on the process group at exit


# -- the tests' side -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCENARIOS = ("equal", "compiled", "raise0", "raise1", "nowatch")
DEADLINE = 120.0  # all scenarios together, started at once; ~35 s on the 2-core CI machine


def _start(scenario: str, out: Path) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, scenario, str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _finish(scenario: str, out: Path, procs: list[subprocess.Popen], deadline: float) -> list[dict] | str:
    """Each rank's result, or why there is none (a hang is killed at the deadline, never waited out)."""
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(0.1, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        return f"{scenario}: the ranks did not finish within {DEADLINE} s (a hang)"
    results = []
    for rank, log in enumerate(logs):
        path = out / f"{scenario}-{rank}.json"
        if not path.exists():
            return f"{scenario}: rank {rank} wrote no result:\n{log[-3000:]}"
        result = json.loads(path.read_text())
        if "crash" in result:
            return f"{scenario}: rank {rank}:\n{result['crash']}\n{log[-2000:]}"
        results.append(result)
    return results


class Scenarios:
    def __init__(self, folder: Path, outcomes: dict[str, list[dict] | str]) -> None:
        self.folder, self._outcomes = folder, outcomes

    def __getitem__(self, scenario: str) -> list[dict]:
        outcome = self._outcomes[scenario]
        if isinstance(outcome, str):
            raise AssertionError(outcome)
        return outcome

    def store(self, scenario: str) -> Path:
        return self.folder / scenario


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Scenarios:
    """Every scenario on its own 2 ranks, all started at once (the start-up of torch dominates)."""
    folder = tmp_path_factory.mktemp("dist")
    started = {}
    for scenario in SCENARIOS:
        (folder / scenario).mkdir()
        started[scenario] = _start(scenario, folder / scenario)
    example = _start_example(folder / "example")
    deadline = time.monotonic() + DEADLINE
    outcomes = {sc: _finish(sc, folder / sc, procs, deadline) for sc, procs in started.items()}
    try:
        log = example.communicate(timeout=max(0.1, deadline - time.monotonic()))[0]
        outcomes["example"] = [{"rc": example.returncode, "log": log}]
    except subprocess.TimeoutExpired:
        example.kill()
        example.communicate()
        outcomes["example"] = f"examples/torchrun_ddp.py --quick did not finish within {DEADLINE} s"
    return Scenarios(folder, outcomes)


def _start_example(folder: Path) -> subprocess.Popen:
    """`torchrun --nproc-per-node 2 examples/torchrun_ddp.py --quick`, with the venv's torchrun."""
    folder.mkdir()
    torchrun = Path(sys.executable).parent / "torchrun"
    script = Path(__file__).parents[2] / "examples" / "torchrun_ddp.py"
    args = ["--nproc-per-node", str(WORLD), "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    return subprocess.Popen([str(torchrun), *args, str(script), "--quick", "--store", str(folder / "ex.db")],
                            cwd=folder, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


NOT_REDUCED = {"grad_norm_pre_clip", "logit_lse_mean", "logit_abs_max", "attn_logit_max", "attn_entropy",
               "attn_entropy_min_head", "norm_overflow"}


def _assert_same_records(r, ref, *, exact_grad_hist: bool, update: str = "update_ratio_est") -> None:
    assert r.steps.tolist() == ref.steps.tolist() == list(range(STEPS))
    assert r.layers == ref.layers
    # The transformer statistics are not recorded under torch.distributed (docs/transformers.md).
    assert r.stats == [s for s in ref.stats if s not in NOT_REDUCED]
    for stat in ("dead_frac", "saturated_frac", "out_grad_norm", update):
        assert stat in r.stats
    for stat in r.stats:
        for layer in ref.layers:
            np.testing.assert_allclose(r.stat(stat, layer), ref.stat(stat, layer), rtol=RTOL, atol=ATOL,
                                       equal_nan=True, err_msg=f"{stat} of layer {layer!r}")
    for layer in ref.layers:
        for kind in ("act", "grad"):
            got, want = r.hist(layer, kind), ref.hist(layer, kind)
            assert [h[0] for h in got] == [h[0] for h in want]
            for (_, lo, hi, nf, counts), (_, lo_, hi_, nf_, counts_) in zip(got, want):
                np.testing.assert_allclose([lo, hi], [lo_, hi_], rtol=RTOL, atol=ATOL)
                assert nf == nf_ and abs(counts.sum() - counts_.sum()) < 1e-6
                if kind == "grad" and exact_grad_hist:  # replicated gradients: rank 0's, exact
                    np.testing.assert_allclose(counts, counts_, atol=1e-9)


def test_ddp_and_fsdp2_record_what_one_process_records(ranks, tmp_path):
    results, folder = ranks["equal"], ranks.store("equal")
    ref = graddoctor.load(train(make_model(), make_data(), store=tmp_path / "ref.db", name="ref", **WATCH))
    exact = graddoctor.load(train(make_model(), make_data(), store=tmp_path / "ref.db", name="exact",
                                  update_ratio="exact", **WATCH))
    ddp = graddoctor.load(folder / "ddp.db", name="ddp")
    assert ddp.status == "finished"
    _assert_same_records(ddp, exact, exact_grad_hist=True, update="update_ratio")
    assert ref.stat("dead_frac", "1")[0] == 1 / 8  # unit 1 only: unit 0 is silent on rank 0, not on rank 1
    _assert_same_records(graddoctor.load(folder / "fsdp.db", name="fsdp"), ref, exact_grad_hist=False)

    resumed = graddoctor.load(folder / "resumed.db", name="resumed")
    assert resumed.steps.tolist() == [0, 1, 2, 3] and resumed.status == "finished"
    assert [h[0] for h in resumed.hist("0", "grad")] == [0, 2]

    # only rank 0 writes; rank 1 holds no store and says so
    assert results[0]["ddp_view"] is None
    assert results[1]["ddp_view"].startswith("ConfigError") and "rank 0" in results[1]["ddp_view"]
    assert results[1]["ddp_path"] == str(folder / "ddp.db")
    assert not (folder / "fine.db").exists()


def test_bad_configurations_are_refused_on_every_rank(ranks):
    results = ranks["equal"]
    for result in results:
        assert result["mismatch"].startswith("ConfigError") and "every" in result["mismatch"], result["mismatch"]
        assert result["unwritable"].startswith("StoreError") and "does not exist" in result["unwritable"]
        assert result["fsdp1"].startswith("ConfigError") and "fully_shard" in result["fsdp1"]
        assert result["replicated_dtensor"].startswith("ConfigError") and "Replicate" in result["replicated_dtensor"]
    assert "rank 0 cannot write" in results[1]["unwritable"]


def test_one_gather_per_recorded_step_and_none_in_between(ranks):
    # every=2 over 5 steps: steps 0, 2, 4 recorded. At the first recorded step the gathered headers
    # bring the layers' unit counts and every rank gathers once more on the agreed layout; after
    # that, exactly one all_gather per recorded step, and nothing on the steps in between.
    for result in ranks["equal"]:
        assert result["collectives"] == [2, 0, 1, 0, 1]


def test_a_layer_that_fires_on_one_rank_only_costs_one_more_gather_once(ranks):
    for result in ranks["equal"]:
        assert result["branch"] == [2, 2, 1, 1]  # step 1: `extra` first fires (on rank 1 alone)
    r = graddoctor.load(ranks.store("equal") / "branch.db", name="branch")
    assert r.status == "finished" and r.steps.tolist() == [0, 1, 2, 3]
    extra = r.stat("dead_frac", "extra")
    assert np.isnan(extra[0]) and np.isfinite(extra[1:]).all()  # recorded from the step it first ran


def test_watch_after_compiled_ddp_ran_is_recorded_or_refused_never_silent(ranks, tmp_path):
    # torch.compile(DDP(model)) called once, then watched. Today Dynamo retraces (DDP's graph breaks
    # and its guards on hooks) and the numbers are right; were the hooks ignored, the first
    # recorded step would raise ProbeError on every rank. Either is fine; silence is not.
    ref = graddoctor.load(train(make_model(), make_data(), store=tmp_path / "ref.db", name="ref", **WATCH))
    outcomes = {}
    for case in ("compiled", "inner"):  # torch.compile(DDP(model)), DDP(torch.compile(model))
        errors = [result[case] for result in ranks["compiled"]]
        store = ranks.store("compiled") / f"{case}.db"
        if errors[0] is not None:
            assert all(e is not None and e.startswith("ProbeError") and "compile" in e for e in errors), errors
            assert graddoctor.load(store).status == "failed"
            outcomes[case] = "ProbeError"
        else:
            assert errors == [None, None]
            _assert_same_records(graddoctor.load(store), ref, exact_grad_hist=True)
            outcomes[case] = "recorded"
    assert outcomes == {"compiled": "recorded", "inner": "ProbeError"}  # today's behaviour; either is fine


def test_hooks_blind_on_one_rank_only_stop_every_rank_with_that_rank_named(ranks):
    # DDP(torch.compile(model)) called before watch on rank 1 only: rank 1 sees gradients but no
    # forward. Both ranks raise at the first recorded step's gather (never rank 1 alone, leaving
    # rank 0 to wait for it), and the run is marked failed.
    for result in ranks["compiled"]:
        error = result["one_rank"]
        assert error.startswith("ProbeError") and "on rank 1 saw gradients but no forward" in error, error
    r = graddoctor.load(ranks.store("compiled") / "one.db")
    assert r.status == "failed" and len(r.steps) == 0


def test_torchrun_example_runs_in_its_quick_form(ranks):
    (outcome,) = ranks["example"]
    assert outcome["rc"] == 0, outcome["log"][-3000:]
    assert "ddp: 2 ranks, 3 recorded steps of 6" in outcome["log"]
    r = graddoctor.load(ranks.store("example") / "ex.db", name="ddp")
    assert r.status == "finished" and r.steps.tolist() == [0, 2, 4]


@pytest.mark.parametrize("who", [0, 1])
def test_rank_that_raises_leaves_a_readable_store(ranks, who):
    results, folder = ranks[f"raise{who}"], ranks.store(f"raise{who}")
    assert f"boom on rank {who}" in results[who]["error"]
    assert results[1 - who]["error"] is not None  # the other rank stops too, with an error, not a hang
    with sqlite3.connect(folder / "raise.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    r = graddoctor.load(folder / "raise.db", name="raise")
    assert r.status == "failed"
    assert r.steps.tolist() == [0, 1]
    assert np.isfinite(r.stat("grad_norm", "0")).all()


def test_rank_that_never_watches_is_an_error_not_a_hang(ranks):
    error = ranks["nowatch"][0]["error"]
    assert error.startswith("ConfigError") and "every rank" in error


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
