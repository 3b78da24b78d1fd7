"""`graddoctor top` in a real terminal (tmux): it refreshes while a process writes, and Ctrl-C ends it cleanly.
`graddoctor diagnose --follow` prints what a run records as it records it, and ends with the run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow


def _tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, check=True).stdout


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)")
def test_top_refreshes_while_a_run_is_written_and_exits_on_ctrl_c(tmp_path):
    pytest.importorskip("rich")
    store = tmp_path / "live.db"
    socket = f"gd-top-{os.getpid()}"
    env = f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}"
    top = f"env {env} {sys.executable} -m graddoctor top {store} --interval 0.2; echo EXIT=$?; sleep 60"
    _tmux(socket, "new-session", "-d", "-s", "top", "-x", "160", "-y", "50", top)
    writer = None
    try:
        pane = lambda: _tmux(socket, "capture-pane", "-p", "-t", "top")  # noqa: E731
        assert _wait_for(lambda: "waiting for a run" in pane(), 180), pane()  # started before the store exists
        writer = subprocess.Popen([sys.executable, str(HERE / "live_writer.py"), str(store), "400", "0.1"])
        steps_seen = set()

        def refreshed() -> bool:
            steps_seen.update(int(m) for m in re.findall(r"(\d+) recorded steps", pane()))
            return len(steps_seen) >= 3 and "skip [nonfinite]" in pane()

        assert _wait_for(refreshed, 300), (steps_seen, pane())  # generous: a loaded machine starts torch slowly
        assert "input side first" in pane() and "loss" in pane()
        _tmux(socket, "send-keys", "-t", "top", "C-c")
        assert _wait_for(lambda: "EXIT=" in pane(), 30), pane()
        assert "EXIT=0" in pane() and "Traceback" not in pane()
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


def test_diagnose_follow_prints_as_the_run_records_and_ends_with_it(tmp_path):
    store = tmp_path / "live.db"
    writer = subprocess.Popen([sys.executable, str(HERE / "live_writer.py"), str(store), "30", "0.05"])
    try:
        out = subprocess.run([sys.executable, "-m", "graddoctor", "diagnose", str(store), "--follow", "--interval", "0.2"],
                             capture_output=True, text=True, timeout=180)
    finally:
        writer.wait(timeout=120)
    assert "step 3: skip [nonfinite]" in out.stdout
    assert "run 'live' finished after 30 recorded steps." in out.stdout
    assert "graddoctor diagnosis of run 'live'" in out.stdout
    assert out.returncode == 1  # the NaN step is an error finding: --fail-on error
