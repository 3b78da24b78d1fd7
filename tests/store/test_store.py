"""The SQLite run store: its format, many runs per file, NaN/Inf, foreign files, resume, readers."""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.errors import StoreError
from graddoctor.store.schema import SCHEMA_VERSION

WORKER = Path(__file__).with_name("store_worker.py")
GDOC = 0x47444F43  # b"GDOC": changing it would make every existing store "foreign"


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))


def train(model, opt, run, n, start_loss_tag=None):
    losses = []
    for _ in range(n):
        loss = (model(torch.randn(16, 8)) - 1).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        run.log(loss=loss)
        losses.append(loss.item())
    return losses


def record(path, name=None, n=2, tag=None, **kwargs):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graddoctor.watch(model, opt, store=path, name=name, **kwargs) as run:
        losses = train(model, opt, run, n)
        if tag is not None:
            run.log(tag=tag)
    return losses


def folder_state(folder: Path) -> dict[str, str]:
    """Every file in `folder` with the hash of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# -- the file format ---------------------------------------------------------------------------------


def test_store_file_is_marked_and_versioned(store_path):
    record(store_path, name="a")
    header = store_path.read_bytes()[:100]
    assert header.startswith(b"SQLite format 3\x00")
    assert header[68:72] == b"GDOC"  # PRAGMA application_id, big-endian, at offset 68
    assert int.from_bytes(header[60:64], "big") == SCHEMA_VERSION  # PRAGMA user_version
    con = sqlite3.connect(store_path)
    try:
        assert con.execute("PRAGMA application_id").fetchone()[0] == GDOC
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "layers", "steps", "stats", "scalars", "hists"} <= tables
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        run = con.execute("SELECT name, status, config_json, env_json FROM runs").fetchone()
        assert run[:2] == ("a", "finished")
        assert json.loads(run[2])["watch"]["every"] == 1
        assert json.loads(run[3])["torch"] == torch.__version__
    finally:
        con.close()


def test_existing_store_is_reopened_not_recreated(store_path):
    record(store_path, name="a")
    record(store_path, name="b")
    con = sqlite3.connect(store_path)
    try:
        assert [r[0] for r in con.execute("SELECT name FROM runs ORDER BY run_id")] == ["a", "b"]
    finally:
        con.close()


# -- many runs per file --------------------------------------------------------------------------------


def test_many_runs_per_file_and_load_by_name_gives_latest(store_path):
    record(store_path, name="a", n=2, tag=1)
    record(store_path, name="b", n=3, tag=2)
    record(store_path, name="a", n=4, tag=3)
    latest_a = graddoctor.load(store_path, name="a")
    assert latest_a.name == "a"
    assert latest_a.steps.tolist() == [0, 1, 2, 3]
    assert latest_a.scalar("tag")[-1] == 3
    b = graddoctor.load(store_path, name="b")
    assert b.steps.tolist() == [0, 1, 2]
    assert b.scalar("tag")[-1] == 2
    latest = graddoctor.load(store_path)
    assert latest.run_id == latest_a.run_id
    assert len({latest_a.run_id, b.run_id, graddoctor.load(store_path, name="a").run_id}) == 2
    store = graddoctor.store.RunStore(store_path, readonly=True)
    try:
        runs = store.runs()
    finally:
        store.close()
    assert [(r["name"], r["n_steps"], r["status"]) for r in runs] == [
        ("a", 2, "finished"), ("b", 3, "finished"), ("a", 4, "finished")]
    with pytest.raises(StoreError) as info:
        graddoctor.load(store_path, name="zzz")
    assert "zzz" in str(info.value) and "a" in str(info.value) and "b" in str(info.value)


def test_empty_store_has_no_runs(store_path):
    graddoctor.store.RunStore(store_path).close()
    with pytest.raises(StoreError, match="no runs"):
        graddoctor.load(store_path)


# -- NaN and Inf -------------------------------------------------------------------------------------


def test_nan_and_inf_values_read_back_as_nan_and_inf(store_path):
    model = mlp()
    with graddoctor.watch(model, store=store_path, name="nf") as run:
        for step in range(2):
            model.zero_grad()
            (model(torch.randn(16, 8)) - 1).pow(2).mean().backward()
            if step == 1:
                model[0].weight.grad.fill_(float("inf"))  # inf only: norm inf, not NaN
                model[2].weight.grad[0, 0] = float("nan")
            run.log(nan_s=float("nan"), inf_s=float("inf"), ninf_s=float("-inf"), t_nan=torch.tensor(float("nan")),
                    fin=1.5)
            run.step()
    r = graddoctor.load(store_path, name="nf")
    assert r.steps.tolist() == [0, 1]
    g0, g2 = r.stat("grad_norm", "0"), r.stat("grad_norm", "2")
    assert np.isfinite(g0[0]) and np.isfinite(g2[0])
    assert g0[1] == math.inf
    assert np.isnan(g2[1])
    n0 = sum(p.numel() for p in model[0].parameters())
    assert r.stat("nonfinite_frac", "0").tolist() == [0.0, model[0].weight.numel() / n0]
    assert r.stat("nonfinite_frac", "2")[1] == 1 / sum(p.numel() for p in model[2].parameters())
    # A recorded NaN is a value, not a missing row.
    assert "grad_norm" in r.latest("2") and math.isnan(r.latest("2")["grad_norm"])
    assert r.latest("0")["grad_norm"] == math.inf
    assert np.isnan(r.scalar("nan_s")).all() and np.isnan(r.scalar("t_nan")).all()
    assert r.scalar("inf_s").tolist() == [math.inf, math.inf]
    assert r.scalar("ninf_s").tolist() == [-math.inf, -math.inf]
    assert r.scalar("fin").tolist() == [1.5, 1.5]
    assert r.first_nonfinite == {"step": 1, "layer": "0", "stat": "grad_norm", "pass": "gradient"}
    hist = r.hist("0", "grad")
    assert hist and hist[0][0] == 0 and hist[0][3] == 0


def test_store_level_nan_inf_round_trip(store_path):

    store = graddoctor.store.RunStore(store_path)
    try:
        run_id = store.create_run("raw", {}, {})
        store.set_layers(run_id, [(0, "l0", "Linear", "param", 10, "{}")])
        store.write(run_id, steps=[(0, 1.0), (1, 2.0), (2, 3.0)],
                    stats=[(0, 0, "grad_norm", float("nan")), (1, 0, "grad_norm", float("inf")),
                           (2, 0, "grad_norm", float("-inf"))],
                    scalars=[(0, "x", float("inf")), (1, "x", float("nan")), (2, "x", 0.0)])
        store.finish_run(run_id, "finished")
    finally:
        store.close()
    r = graddoctor.load(store_path)
    g = r.stat("grad_norm", "l0")
    assert np.isnan(g[0]) and g[1] == math.inf and g[2] == -math.inf
    x = r.scalar("x")
    assert x[0] == math.inf and np.isnan(x[1]) and x[2] == 0.0
    assert r._recorded["grad_norm"].all()


# -- foreign files are refused and left untouched -----------------------------------------------------


OPENERS = {
    "watch": lambda p: graddoctor.watch(mlp(), store=p),
    "load": lambda p: graddoctor.load(p),
    "RunStore": lambda p: graddoctor.store.RunStore(p),
}


def _text_file(path: Path) -> None:
    path.write_text("epoch,loss\n" + "".join(f"{i},{1 / (i + 1):.4f}\n" for i in range(200)))


def _binary_file(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def _broken_sqlite(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)


def _sqlite_db(journal_mode: str):
    def make(path: Path) -> None:
        con = sqlite3.connect(path)
        con.execute(f"PRAGMA journal_mode={journal_mode}")
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(100)])
        con.commit()
        con.close()
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    return make


FOREIGN = {
    "text": (_text_file, "not an SQLite database"),
    "binary": (_binary_file, "not an SQLite database"),
    "broken_sqlite": (_broken_sqlite, "not a graddoctor run store"),
    "sqlite_delete_journal": (_sqlite_db("DELETE"), "not a graddoctor run store"),
    "sqlite_wal": (_sqlite_db("WAL"), "not a graddoctor run store"),
}
@pytest.mark.parametrize("opener", sorted(OPENERS))
@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_foreign_file_is_refused_and_left_untouched(tmp_path, kind, opener):
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "runs.db"
    make, needle = FOREIGN[kind]
    make(path)
    before = folder_state(folder)
    with pytest.raises(StoreError) as info:
        OPENERS[opener](path)
    message = str(info.value)
    assert "not a graddoctor run store" in message, message
    assert needle in message, message
    assert str(path) in message
    assert "untouched" in message
    assert folder_state(folder) == before, "the foreign file was changed or files were added beside it"


def test_store_from_a_newer_graddoctor_is_refused(tmp_path):
    path = tmp_path / "runs.db"
    record(path, name="a")
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for opener in OPENERS.values():
        with pytest.raises(StoreError, match="upgrade graddoctor"):
            opener(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


# -- paths that cannot hold a store ------------------------------------------------------------------


def test_missing_folder_raises_store_error_and_creates_nothing(tmp_path):
    path = tmp_path / "no" / "such" / "folder" / "runs.db"
    with pytest.raises(StoreError) as info:
        graddoctor.watch(mlp(), store=path)
    assert "does not exist" in str(info.value)
    assert not (tmp_path / "no").exists()
    assert list(tmp_path.iterdir()) == []


def test_path_under_a_file_raises_store_error(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    with pytest.raises(StoreError) as info:
        graddoctor.watch(mlp(), store=blocker / "runs.db")
    assert str(blocker / "runs.db") in str(info.value)
    assert blocker.read_text() == "keep me"


def test_folder_as_store_path_raises_store_error(tmp_path):
    with pytest.raises(StoreError, match="folder"):
        graddoctor.watch(mlp(), store=tmp_path)
    with pytest.raises(StoreError, match="folder"):
        graddoctor.load(tmp_path)


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_unwritable_location_raises_store_error():
    with pytest.raises(StoreError, match="cannot open the run store"):
        graddoctor.watch(mlp(), store="/proc/graddoctor-test-runs.db")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_folder_raises_store_error(tmp_path):  # pragma: no cover - CI runs as root
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(StoreError):
            graddoctor.watch(mlp(), store=folder / "runs.db")
    finally:
        folder.chmod(0o700)


def test_load_of_missing_store_raises_and_creates_nothing(tmp_path):
    with pytest.raises(StoreError, match="no run store"):
        graddoctor.load(tmp_path / "runs.db")
    assert list(tmp_path.iterdir()) == []


def test_store_errors_are_oserrors():
    assert issubclass(StoreError, OSError) and issubclass(StoreError, graddoctor.GradDoctorError)


# -- reading a run back --------------------------------------------------------------------------------


def test_load_live_run_inside_block(store_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graddoctor.watch(model, opt, store=store_path, name="live") as run:
        train(model, opt, run, 3)
        live = graddoctor.load(run)
        assert live.steps.tolist() == [0, 1, 2]
        assert live.status == "running"
        assert run.path == str(store_path)
    assert graddoctor.load(store_path).steps.tolist() == [0, 1, 2]


def test_load_run_after_block_with_file_store(store_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graddoctor.watch(model, opt, store=store_path, name="after") as run:
        train(model, opt, run, 3)
    r = graddoctor.load(run)
    assert r.steps.tolist() == [0, 1, 2]
    assert r.status == "finished"


def test_load_rejects_other_sources():
    with pytest.raises(graddoctor.errors.ConfigError):
        graddoctor.load(42)


# -- resume -----------------------------------------------------------------------------------------------


def test_resume_continues_step_numbering(store_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graddoctor.watch(model, opt, store=store_path, name="exp") as run:
        losses = train(model, opt, run, 3)
    record(store_path, name="other", n=1)  # another run in between
    with graddoctor.watch(model, opt, store=store_path, name="exp", resume=True) as run:
        losses += train(model, opt, run, 3)
    r = graddoctor.load(store_path, name="exp")
    assert r.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert r.scalar("loss").tolist() == losses
    assert r.layers == ["0", "1", "2"]
    assert np.isfinite(r.stat("grad_norm", "0")).all()
    assert np.isfinite(r.stat("act_mean", "1")).all()
    assert r.status == "finished"
    store = graddoctor.store.RunStore(store_path, readonly=True)
    try:
        assert [x["name"] for x in store.runs()] == ["exp", "other"]  # resumed in place, not a new run
    finally:
        store.close()


def test_resume_after_failure_clears_the_error(store_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(RuntimeError):
        with graddoctor.watch(model, opt, store=store_path, name="exp") as run:
            train(model, opt, run, 2)
            raise RuntimeError("out of memory")
    assert graddoctor.load(store_path).status == "failed"
    with graddoctor.watch(model, opt, store=store_path, name="exp", resume=True) as run:
        train(model, opt, run, 2)
    r = graddoctor.load(store_path, name="exp")
    assert r.steps.tolist() == [0, 1, 2, 3]
    assert r.status == "finished" and r.error is None


def test_resume_with_every_continues_from_the_last_step_taken(store_path):
    # 6 steps taken (0..5), the last recorded is 4: the next step is 6, not 4 + 1.
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graddoctor.watch(model, opt, store=store_path, name="exp", every=2, hist_every=2) as run:
        train(model, opt, run, 6)
    with graddoctor.watch(model, opt, store=store_path, name="exp", every=2, hist_every=2, resume=True) as run:
        train(model, opt, run, 3)
    assert graddoctor.load(store_path, name="exp").steps.tolist() == [0, 2, 4, 6, 8]


# -- a reader in another process ----------------------------------------------------------------------


@pytest.mark.slow
def test_reader_process_sees_steps_grow_while_training_writes(store_path, tmp_path):
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, str(WORKER), "read", str(store_path), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    n_steps = 40
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with graddoctor.watch(model, opt, store=store_path, name="live", flush_seconds=0.05) as run:
            for _ in range(n_steps):
                train(model, opt, run, 1)
                time.sleep(0.04)
        stop.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == [], result["errors"]
    seen = result["seen"]
    counts = [n for n, _, _ in seen]
    assert counts == sorted(counts), "a reader saw the number of steps go down"
    assert all(last == n - 1 for n, last, _ in seen), "a reader saw a gap in the steps"
    during = {n for n, _, status in seen if status == "running" and 0 < n < n_steps}
    assert len(during) >= 3, f"the reader saw too few intermediate states: {sorted(during)}"
    assert all(status in ("running", "finished") for _, _, status in seen)  # never 'crashed' while alive
    assert result["final"] == [n_steps, "finished"]
