"""How a run ends when training does not end well: SIGKILL mid-training, an exception in the block."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.store.sqlite import RunStore
from graddoctor.store.writer import StoreWriter

WORKER = Path(__file__).with_name("store_worker.py")
FLUSH_SECONDS = 0.2
MARGIN = 0.5  # a step printed this long before the kill was flushed (2.5 flush intervals)


def _model_and_opt():
    torch.manual_seed(0)  # the same architecture as the worker's, for resume
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


@pytest.mark.slow
def test_sigkill_keeps_flushed_steps_and_run_reads_as_crashed(store_path):
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), "train", str(store_path), str(FLUSH_SECONDS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    printed: list[tuple[float, int]] = []  # (when this process read it, step)

    def pump():
        for line in proc.stdout:
            line = line.strip()
            if line.isdigit():
                printed.append((time.monotonic(), int(line)))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not (len(printed) >= 20 and printed[-1][0] - printed[0][0] >= 1.5):
            if proc.poll() is not None:
                pytest.fail(f"the training worker exited early ({proc.returncode}): {proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the training worker printed only {len(printed)} steps in 90 s")
            time.sleep(0.05)
        killed_at = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)  # reaped: its pid no longer exists
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    r = graddoctor.load(store_path)
    assert r.name == "crashy"
    assert r.status == "crashed", r.status
    assert r.error is None
    steps = r.steps.tolist()
    assert steps == list(range(len(steps))), "recorded steps are not 0, 1, 2, ... without a gap"
    last_printed = printed[-1][1]
    assert steps[-1] <= last_printed + 1  # a step is queued in optimizer.step(), just before the print
    flushed = [s for t, s in printed if t <= killed_at - MARGIN]
    assert flushed, "no step was printed long enough before the kill"
    missing = sorted(set(flushed) - set(steps))
    assert not missing, f"steps printed >{MARGIN}s before SIGKILL are not in the store: {missing}"
    assert r.layers == ["0", "1", "2"]
    assert np.isfinite(r.stat("grad_norm", "0")).all()
    act = r.stat("act_mean", "1")  # full tier: the first full_first steps, then one in full_every
    full = r.recorded("act_mean")[r.layers.index("1")]
    assert full[:10].all() and np.isfinite(act[full]).all() and np.isnan(act[~full]).all()
    assert np.isfinite(r.scalar("loss")[:-1]).all()  # the last step's loss may be the one lost
    runs = graddoctor.store.RunStore(store_path, readonly=True)
    try:
        assert [run["status"] for run in runs.runs()] == ["crashed"]
        # every=1: the flushed step clock is the last stored step's or one past it, never further
        # (resume continues from it: one past it would leave a gap)
        next_step = runs.con.execute("SELECT next_step FROM runs").fetchone()[0]
        assert steps[-1] <= next_step <= steps[-1] + 1, (next_step, steps[-1])
    finally:
        runs.close()

    # The store survives the crash: the run can be resumed, with its numbering.
    model, opt = _model_and_opt()
    with graddoctor.watch(model, opt, store=store_path, name="crashy", resume=True):
        for _ in range(2):
            loss = model(torch.randn(4, 8)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    r2 = graddoctor.load(store_path, name="crashy")
    assert r2.run_id == r.run_id
    assert r2.steps.tolist() == steps + [steps[-1] + 1, steps[-1] + 2]
    assert r2.status == "finished"


@pytest.mark.parametrize("exc", [ValueError("boom at step 2"), KeyboardInterrupt("stop")], ids=["ValueError", "KeyboardInterrupt"])
def test_exception_in_block_marks_run_failed_and_propagates(store_path, exc):
    model, opt = _model_and_opt()
    with pytest.raises(type(exc)) as info:
        with graddoctor.watch(model, opt, store=store_path, name="bad") as run:
            for step in range(3):
                loss = model(torch.randn(4, 8)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log(loss=loss)
            raise exc
    assert info.value is exc  # the user's own exception, not wrapped
    r = graddoctor.load(store_path, name="bad")
    assert r.status == "failed"
    assert r.error is not None
    assert type(exc).__name__ in r.error
    assert str(exc) in r.error
    assert r.steps.tolist() == [0, 1, 2]  # what was recorded before the error is kept
    assert np.isfinite(r.scalar("loss")).all()
    assert all(not m._forward_hooks for m in model.modules())
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_finished_run_status(store_path):
    model, opt = _model_and_opt()
    with graddoctor.watch(model, opt, store=store_path, name="ok"):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        opt.step()
    r = graddoctor.load(store_path)
    assert r.status == "finished"
    assert r.error is None


def test_a_run_never_closed_is_flushed_and_finished_at_interpreter_exit(tmp_path):
    import subprocess
    import sys

    store = tmp_path / "open.db"
    script = f"""
import torch, graddoctor
model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
run = graddoctor.watch(model, opt, store={str(store)!r}, name="open", flush_seconds=60)
for _ in range(3):
    loss = model(torch.randn(5, 3)).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    r = graddoctor.load(store, name="open")
    assert r.steps.tolist() == [0, 1, 2]  # nothing lost although flush_seconds was never reached
    assert r.status == "finished" and "interpreter exit" in r.error


def test_a_flush_writes_the_next_step_of_the_records_it_took_not_a_later_one(store_path):
    """The writer prepares a batch while the training thread closes more steps: the batch's
    next_step must be the one read with its records. Written after preparing them, it ran ahead
    of the stored steps, and a SIGKILL before the next flush made resume skip the lost step (the
    crash test's [..., 57, 59, 60]: steps 0-57 stored with next_step 59)."""
    store = RunStore(store_path)
    run_id = store.create_run("race", {}, {})

    def prepare(step):
        if step == 0:  # the training thread, meanwhile: step 1 closes and the clock moves to 2
            writer.put_record(1)
            writer.next_step = 2
        return {"steps": [(step, float(step))]}

    writer = StoreWriter(store, run_id, flush_seconds=60, prepare=prepare)  # flushed here only
    try:
        writer.put_record(0)
        writer.next_step = 1
        writer.flush()  # takes step 0; step 1 is queued for the next flush
        # what a SIGKILL now leaves: resume must continue right after the last stored step
        assert [s for (s,) in store.con.execute("SELECT step FROM steps")] == [0]
        assert store.con.execute("SELECT next_step FROM runs").fetchone()[0] == 1
        assert store.resume_run("race") == (run_id, 1)
        writer.flush()
        assert store.resume_run("race") == (run_id, 2)
    finally:
        writer.close("finished")
        store.close()
