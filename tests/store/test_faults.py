"""Storage faults while training: a lock held past the busy timeout, a file-size limit, a full disk.

The writer keeps the unwritten rows (bounded), retries, drops the oldest past the bound, records
the gap once it can write again, warns once, and never makes the training loop raise.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.errors import StoreWarning
from graddoctor.store import writer as writer_module
from graddoctor.store.segments import StepStats
from graddoctor.store.sqlite import RunStore
from graddoctor.store.writer import StoreWriter


def _rows(step: int) -> dict:
    return {"steps": [(step, float(step))], "scalars": [(step, "loss", float(step))],
            "stats": [StepStats(step, ("grad_norm",), np.array([[float(step)]]), np.array([[True]]))]}


def _wait(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _locked(path):
    """A second connection holding the write lock (as another process's long transaction would)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    return con


def test_a_lock_past_the_timeout_keeps_the_newest_rows_drops_the_oldest_and_records_the_gap(store_path):
    store = RunStore(store_path)
    run_id = store.create_run("locked", {}, {})
    store.set_layers(run_id, [(0, "l0", "Linear", "param", 10, "{}")])
    writer = StoreWriter(store, run_id, flush_seconds=0.01, prepare=_rows, max_backlog=4, max_unwritten=5,
                         busy_seconds=0.01)
    for step in range(3):
        writer.put_record(step)
    writer.flush()  # steps 0-2 are in the file before the fault
    lock = _locked(store_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        start = time.perf_counter()
        for step in range(3, 23):
            writer.next_step = step
            writer.put_record(step)  # never blocks on the full backlog while the fault lasts
            time.sleep(0.002)
        producing = time.perf_counter() - start
        _wait(lambda: not writer._records and writer.fault is not None and writer._unwritten.n_steps == 5)
        assert "database locked" in writer.fault
        assert writer.dropped == 15
        lock.rollback()
        writer.flush()  # space (here: the lock) returns: the kept rows and the gap are written
        assert writer.fault is None
        writer.close("finished")
    store.close()
    lock.close()
    assert producing < 1.0, f"the producer waited {producing:.2f} s on a faulty store"
    store_warnings = [w for w in seen if issubclass(w.category, StoreWarning)]
    assert len(store_warnings) == 1, [str(w.message) for w in store_warnings]
    assert "cannot write to the run store" in str(store_warnings[0].message)
    r = graddoctor.load(store_path)
    assert r.steps.tolist() == [0, 1, 2, 18, 19, 20, 21, 22]  # before the fault, and the newest 5
    assert r.stat("grad_norm", "l0").tolist() == [0, 1, 2, 18, 19, 20, 21, 22]
    assert r.scalar("loss").tolist() == [0, 1, 2, 18, 19, 20, 21, 22]
    assert len(r.gaps) == 1
    gap = r.gaps[0]
    assert (gap.first_step, gap.last_step, gap.n_steps) == (3, 17, 15)
    assert "database locked" in gap.reason
    assert r.dropped_steps == 15
    assert r.status == "finished"
    assert r.error.startswith("steps 3-17 not stored (15 recorded steps): database locked")


def test_without_drops_a_fault_loses_nothing(store_path):
    store = RunStore(store_path)
    run_id = store.create_run("brief", {}, {})
    writer = StoreWriter(store, run_id, flush_seconds=0.01, prepare=_rows, busy_seconds=0.01)
    lock = _locked(store_path)
    with pytest.warns(StoreWarning, match="database locked"):
        for step in range(10):
            writer.put_record(step)
        _wait(lambda: writer.fault is not None)
    lock.rollback()
    _wait(lambda: writer.fault is None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say at closing: every row is stored
        writer.close("finished")
    store.close()
    lock.close()
    r = graddoctor.load(store_path)
    assert r.steps.tolist() == list(range(10))
    assert r.gaps == () and r.dropped_steps == 0 and r.error is None


def _model_and_opt():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def _train(model, opt, run, n):
    for _ in range(n):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log(loss=loss)


@pytest.mark.parametrize("raised", [None, ValueError("boom")], ids=["finished", "user-error"])
def test_a_store_locked_until_the_end_never_makes_exit_raise(store_path, monkeypatch, raised):
    monkeypatch.setattr(writer_module, "BUSY_SECONDS", 0.01)
    model, opt = _model_and_opt()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) if raised else _nothing():
            with graddoctor.watch(model, opt, store=store_path, name="stuck", flush_seconds=0.01) as run:
                _train(model, opt, run, 3)
                run.view()  # steps 0-2 stored
                lock = _locked(store_path)
                _train(model, opt, run, 5)
                _wait(lambda: run._writer.fault is not None)
                if raised:
                    raise raised
    lock.rollback()
    lock.close()
    messages = [str(w.message) for w in seen if issubclass(w.category, StoreWarning)]
    assert len(messages) == 2, messages  # at the first fault, and at closing: the store is still locked
    assert "still cannot be written at the end of the run" in messages[1]
    assert "steps 3-7 not stored" in messages[1]
    r = graddoctor.load(store_path)
    assert r.steps.tolist() == [0, 1, 2]
    assert r.status == "running"  # (it reads as 'crashed' once this process has ended)
    assert all(not m._forward_hooks for m in model.modules())


def test_a_run_through_a_lock_trains_on_and_show_and_diagnose_name_the_gap(store_path, monkeypatch, capsys):
    monkeypatch.setattr(writer_module, "BUSY_SECONDS", 0.01)
    monkeypatch.setattr(writer_module, "MAX_UNWRITTEN", 3)
    model, opt = _model_and_opt()
    with pytest.warns(StoreWarning, match="database locked"):
        with graddoctor.watch(model, opt, store=store_path, name="through", flush_seconds=0.01) as run:
            _train(model, opt, run, 4)
            run.view()  # steps 0-3 stored
            lock = _locked(store_path)
            _train(model, opt, run, 8)  # steps 4-11: the newest 3 are kept
            _wait(lambda: run._writer.fault is not None and run._writer.dropped == 5)
            lock.rollback()
            lock.close()
            _wait(lambda: run._writer.fault is None)
            _train(model, opt, run, 4)
    r = graddoctor.load(store_path)
    assert r.steps.tolist() == [0, 1, 2, 3, 9, 10, 11, 12, 13, 14, 15]
    assert [(g.first_step, g.last_step, g.n_steps) for g in r.gaps] == [(4, 8, 5)]
    assert r.status == "finished" and r.error.startswith("steps 4-8 not stored (5 recorded steps): database locked")
    assert np.isfinite(r.scalar("loss")).all()
    from graddoctor.cli import main

    assert main(["show", str(store_path)]) == 0
    assert "steps 4-8 not stored (5 recorded steps): database locked" in capsys.readouterr().out
    notes = graddoctor.diagnose(r).notes
    assert any(n.startswith("steps 4-8 not stored") and n.endswith("findings cover the stored steps.") for n in notes)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


SCRIPT = """
import json, os, resource, signal, sys, time, warnings
import torch, graddoctor
from graddoctor.store import writer
writer.MAX_UNWRITTEN = 8
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the file-size limit fails with EFBIG, not a kill


def wait(condition):
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def train(path, n, fault_at, fault, mend_at, mend):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with graddoctor.watch(model, opt, store=path, flush_seconds=0.01) as run:
            for step in range(n):
                if step == fault_at:
                    run.view()  # every step so far is in the file
                    fault()
                if step == mend_at:
                    failed = run._writer.faults  # two more failed tries: one began after the last step was queued
                    wait(lambda: run._writer.faults >= failed + 2)  # (a try every 10 ms)
                    mend()
                    wait(lambda: run._writer.fault is None)  # and has written again
                loss = model(torch.randn(4, 8)).pow(2).mean()
                opt.zero_grad(); loss.backward(); opt.step()
                run.log(loss=loss)
    r = graddoctor.load(path)
    return {"steps": r.steps.tolist(), "gaps": [list(vars(g).values()) for g in r.gaps], "error": r.error,
            "status": r.status, "dropped": r.dropped_steps, "finite": bool(np.isfinite(r.stat("grad_norm", "0")).all()),
            "warnings": [str(w.message) for w in seen if issubclass(w.category, graddoctor.errors.StoreWarning)]}


def file_size_limit(folder):
    path = os.path.join(folder, "limited.db")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    def limit():  # no file may grow any more
        size = max(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    return train(path, 60, 10, limit, 50, lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard)))


def disk_full(folder):
    disk = os.path.join(folder, "disk")
    os.mkdir(disk)
    if os.system(f"mount -t tmpfs -o size=1m tmpfs {disk} 2>/dev/null") != 0:
        return None
    ballast = os.path.join(disk, "ballast")
    def fill():
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:  # ENOSPC
            os.close(fd)
    return train(os.path.join(disk, "full.db"), 30, 5, fill, 25, lambda: os.remove(ballast))


import numpy as np
print(json.dumps({"limit": file_size_limit(sys.argv[1]), "full": disk_full(sys.argv[1])}))
"""


@pytest.fixture(scope="module")
def faulted(tmp_path_factory):
    """Both runs in one process (one import of torch): a file-size limit, then a full tmpfs where an
    unprivileged mount namespace is available (`unshare -rm`; root is not needed)."""
    folder = tmp_path_factory.mktemp("faults")
    unshare = shutil.which("unshare")
    namespace = bool(unshare) and subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode == 0
    command = ([unshare, "-rm"] if namespace else []) + [sys.executable, "-c", SCRIPT, str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_gap(found, n, fault_at, mend_at, reason):
    """Every step before the fault, one gap of the oldest ones during it, the newest ones and the rest after."""
    steps = found["steps"]
    assert found["status"] == "finished"
    assert steps[:fault_at] == list(range(fault_at))
    assert steps[-(n - mend_at):] == list(range(mend_at, n))
    assert len(found["gaps"]) == 1, found["gaps"]
    first, last, count, why = found["gaps"][0]
    assert reason in why
    assert first == fault_at and count == last - first + 1 and last < mend_at
    assert sorted(steps + list(range(first, last + 1))) == list(range(n))  # stored, or in the gap
    assert len([s for s in steps if fault_at <= s < mend_at]) <= 8  # the bound (MAX_UNWRITTEN) held
    assert found["dropped"] == count
    assert found["error"].startswith(f"steps {first}-{last} not stored ({count} recorded steps): {reason}")
    assert len(found["warnings"]) == 1, found["warnings"]  # once, not every step
    assert found["finite"]


def test_a_file_size_limit_is_survived_with_one_warning_and_a_recorded_gap(faulted):
    _check_gap(faulted["limit"], 60, 10, 50, "disk I/O error (the process's file-size limit RLIMIT_FSIZE is")


def test_a_full_disk_is_survived_and_the_gap_says_disk_full(faulted):
    if faulted["full"] is None:
        pytest.skip("no unprivileged mount namespace (unshare -rm) for a small tmpfs here")
    _check_gap(faulted["full"], 30, 5, 25, "disk full")


def test_a_run_cannot_start_in_a_locked_store_and_says_so(store_path, monkeypatch):
    RunStore(store_path).close()
    lock = _locked(store_path)
    monkeypatch.setattr(sqlite3, "connect", _with_timeout(sqlite3.connect, 0.01))
    model, opt = _model_and_opt()
    try:
        with pytest.raises(graddoctor.errors.StoreError, match="cannot start a run in the store .*database is locked"):
            graddoctor.watch(model, opt, store=store_path, name="late")
    finally:
        lock.rollback()
        lock.close()


def _with_timeout(connect, seconds):
    def connect_quickly(*args, **kwargs):
        kwargs["timeout"] = seconds
        return connect(*args, **kwargs)

    return connect_quickly
