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
import torch
from torch import nn

import graddoctor

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
    run = train(DDP(make_model()), data, rank, WORLD, store=out / "ddp.db", name="ddp", **WATCH)
    result["ddp_path"] = run.path
    result["ddp_view"] = _error(run.view)
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
    return result


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
    return {"compiled": err}


def scenario_raise(rank: int, out: Path, who: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    err = _error(lambda: train(DDP(make_model()), make_data(), rank, WORLD, raise_at=2 if rank == who else None,
                               store=out / "raise.db", name="raise", flush_seconds=0.05))
    return {"error": err}


def scenario_nowatch(rank: int, out: Path) -> dict:
    from graddoctor.integrations import distributed

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


def launch(scenario: str, out: Path, timeout: float = 40.0) -> list[dict]:
    """Run SCENARIO on 2 ranks; fail (never hang) when they have not finished within `timeout`."""
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, scenario, str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + timeout
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(0.1, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError(f"{scenario}: the ranks did not finish within {timeout} s (a hang)") from None
    results = []
    for rank, log in enumerate(logs):
        path = out / f"{scenario}-{rank}.json"
        assert path.exists(), f"rank {rank} wrote no result:\n{log[-3000:]}"
        result = json.loads(path.read_text())
        assert "crash" not in result, f"rank {rank}:\n{result['crash']}\n{log[-2000:]}"
        results.append(result)
    return results


def _assert_same_records(r, ref, *, exact_grad_hist: bool) -> None:
    assert r.steps.tolist() == ref.steps.tolist() == list(range(STEPS))
    assert r.layers == ref.layers
    assert r.stats == ref.stats
    for stat in ("dead_frac", "saturated_frac", "out_grad_norm", "update_ratio"):
        assert stat in r.stats
    for stat in ref.stats:
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


def test_ddp_and_fsdp2_record_what_one_process_records(tmp_path):
    results = launch("equal", tmp_path, timeout=50)
    ref = graddoctor.load(train(make_model(), make_data(), store=tmp_path / "ref.db", name="ref", **WATCH))
    ddp = graddoctor.load(tmp_path / "ddp.db", name="ddp")
    assert ddp.status == "finished"
    _assert_same_records(ddp, ref, exact_grad_hist=True)
    assert ref.stat("dead_frac", "1")[0] == 1 / 8  # unit 1 only: unit 0 is silent on rank 0, not on rank 1
    _assert_same_records(graddoctor.load(tmp_path / "fsdp.db", name="fsdp"), ref, exact_grad_hist=False)

    # only rank 0 writes; rank 1 holds no store and says so
    assert results[0]["ddp_view"] is None
    assert results[1]["ddp_view"].startswith("ConfigError") and "rank 0" in results[1]["ddp_view"]
    assert results[1]["ddp_path"] == str(tmp_path / "ddp.db")
    assert not (tmp_path / "fine.db").exists()

    # refusals: on every rank, with what to do
    for rank, result in enumerate(results):
        assert result["mismatch"].startswith("ConfigError") and "every" in result["mismatch"], result["mismatch"]
        assert result["unwritable"].startswith("StoreError") and "does not exist" in result["unwritable"]
        assert result["fsdp1"].startswith("ConfigError") and "fully_shard" in result["fsdp1"]
    assert "rank 0 cannot write" in results[1]["unwritable"]


def test_watch_after_compiled_ddp_ran_is_recorded_or_refused_never_silent(tmp_path):
    # torch.compile(DDP(model)) called once, then watched. Today Dynamo retraces (DDP's graph breaks
    # and its guards on hooks) and the numbers are right; were the hooks ignored, the first
    # recorded step would raise ProbeError on every rank. Either is fine; silence is not.
    errors = [result["compiled"] for result in launch("compiled", tmp_path)]
    if errors[0] is not None:
        assert all(e is not None and e.startswith("ProbeError") and "compile" in e for e in errors), errors
        assert graddoctor.load(tmp_path / "compiled.db").status == "failed"
    else:
        assert errors == [None, None]
        ref = graddoctor.load(train(make_model(), make_data(), store=tmp_path / "ref.db", name="ref", **WATCH))
        _assert_same_records(graddoctor.load(tmp_path / "compiled.db"), ref, exact_grad_hist=True)


def test_rank_that_raises_leaves_a_readable_store(tmp_path):
    for who in (0, 1):
        folder = tmp_path / f"r{who}"
        folder.mkdir()
        results = launch(f"raise{who}", folder)
        assert f"boom on rank {who}" in results[who]["error"]
        assert results[1 - who]["error"] is not None  # the other rank stops too, with an error, not a hang
        with sqlite3.connect(folder / "raise.db") as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        r = graddoctor.load(folder / "raise.db", name="raise")
        assert r.status == "failed"
        assert r.steps.tolist() == [0, 1]
        assert np.isfinite(r.stat("grad_norm", "0")).all()


def test_rank_that_never_watches_is_an_error_not_a_hang(tmp_path):
    results = launch("nowatch", tmp_path)
    assert results[0]["error"].startswith("ConfigError") and "every rank" in results[0]["error"]


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]))
