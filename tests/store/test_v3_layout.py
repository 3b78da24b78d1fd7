"""Schema v3: the segment encoding, old stores read and migrated, lazy readers, the writer's backlog."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import graddoctor
from graddoctor.errors import StoreError
from graddoctor.store import RunStore
from graddoctor.store import segments
from graddoctor.store.migrate import migrate
from graddoctor.store.segments import StepStats
from graddoctor.store.view import read_run
from graddoctor.store.writer import StoreWriter

FIXTURES = Path(__file__).with_name("fixtures")
sys.path.insert(0, str(FIXTURES))
from make_fixture import dump, v2_from_v1  # noqa: E402

F32 = 2.0 ** -24  # float32's relative rounding


def fixture(version: int, tmp_path: Path) -> Path:
    path = tmp_path / f"v{version}.db"
    shutil.copy(FIXTURES / f"v{version}.db", path)
    return path


def version_of(path: Path) -> int:
    store = RunStore(path, readonly=True)
    store.close()
    return store.version


def expected(version: int) -> dict:
    return json.loads((FIXTURES / f"v{version}.json").read_text())


def dumps_of(path: Path) -> dict:
    store = RunStore(path, readonly=True)
    try:
        return {name: json.loads(json.dumps(dump(read_run(store, rid)), sort_keys=True))
                for rid, name in [(1, "plain"), (2, "broken")]}
    finally:
        store.close()


def assert_same_run(got: dict, want: dict, *, exact: bool) -> None:
    """Equal, except statistics other than fractions may differ by float32 rounding when not `exact`."""
    assert {k: v for k, v in got.items() if k != "stats"} == {k: v for k, v in want.items() if k != "stats"}
    assert sorted(got["stats"]) == sorted(want["stats"])
    for stat, w in want["stats"].items():
        g = got["stats"][stat]
        assert g["recorded"] == w["recorded"], stat
        a = np.array(g["values"], dtype=object)
        b = np.array(w["values"], dtype=object)
        text = np.vectorize(lambda v: isinstance(v, str))
        assert (text(a) == text(b)).all() and (a[text(a)] == b[text(b)]).all(), f"{stat}: NaN/Inf moved"
        fa, fb = a[~text(a)].astype(float), b[~text(b)].astype(float)
        if exact or stat in segments.FRACTIONS:
            np.testing.assert_array_equal(fa, fb, err_msg=stat)
        else:
            np.testing.assert_allclose(fa, fb, rtol=F32, atol=0, err_msg=stat)


# -- the encoding ---------------------------------------------------------------------------------


def test_segment_round_trip_keeps_nan_inf_and_not_recorded_apart():
    values = np.array([[1.5, np.nan, np.inf], [-np.inf, 0.0, 7.0]])
    recorded = np.array([[True, True, True], [True, True, False]])
    width, mask, data = segments.encode("grad_norm", values, recorded)
    assert width == 4 and mask is not None and len(data) == 5 * 4
    v, r = segments.decode((2, 3), width, mask, data)
    np.testing.assert_array_equal(r, recorded)
    assert v[0, 0] == 1.5 and np.isnan(v[0, 1]) and v[0, 2] == np.inf and v[1, 0] == -np.inf and v[1, 1] == 0.0
    assert np.isnan(v[1, 2])  # not recorded
    width, mask, data = segments.encode("grad_norm", values, np.ones((2, 3), dtype=bool))
    assert mask is None and len(data) == 6 * 4


@pytest.mark.parametrize("stat, value, width", [
    ("grad_norm", 0.123, 4), ("grad_norm", 0.0, 4),
    ("grad_norm", 1e-60, 8),   # a vanishing gradient below float32's range must not read as 0
    ("grad_norm", 1e39, 8),    # beyond float32's range: it would read as inf
    ("dead_frac", 1 / 3, 8),   # a fraction of counts reads back exactly
    ("act_zero_frac", 0.5, 8),
])
def test_width_is_float32_unless_a_reader_would_lose_something(stat, value, width):
    w, mask, data = segments.encode(stat, np.array([[value, np.nan]]), np.array([[True, True]]))
    assert w == width
    v, _ = segments.decode((1, 2), w, mask, data)
    if width == 8:
        assert v[0, 0] == value
    else:
        assert v[0, 0] == pytest.approx(value, rel=F32)


# -- every older version reads, and migrates -------------------------------------------------------


def test_v1_fixture_reads_as_it_did(tmp_path):
    got = dumps_of(fixture(1, tmp_path))
    for name, want in expected(1).items():
        assert_same_run(got[name], want, exact=True)


def test_migrate_v1_gives_v3_with_the_same_values(tmp_path):
    path = fixture(1, tmp_path)
    result = migrate(path)
    assert result["from_version"] == 1 and result["to_version"] == 3 and result["runs"] == 2
    header = path.read_bytes()[:100]
    assert int.from_bytes(header[60:64], "big") == 3 and header[68:72] == b"GDOC"
    got = dumps_of(path)
    for name, want in expected(1).items():
        assert_same_run(got[name], want, exact=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.db"]  # no temporary file left
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM stats").fetchone()[0] == len(expected(1)["plain"]["stats"])
    finally:
        con.close()
    assert migrate(path)["from_version"] == 3  # a v3 store is left as it is
    store = RunStore(path)  # and takes new runs
    store.close()


def v2_fixture(tmp_path: Path) -> Path:
    path = fixture(1, tmp_path)
    v2_from_v1(path)
    return path


def test_v2_store_reads_as_v1_did_and_migrates_keeping_roles(tmp_path):
    path = v2_fixture(tmp_path)
    assert version_of(path) == 2
    for name, want in expected(1).items():
        assert_same_run(dumps_of(path)[name], want, exact=True)
    con = sqlite3.connect(path)
    roles = con.execute("SELECT run_id, position, role FROM layers ORDER BY run_id, position").fetchall()
    con.close()
    assert {r for _, _, r in roles} == {"weight", "activation"}
    result = migrate(path)
    assert result["from_version"] == 2 and result["to_version"] == 3 and result["runs"] == 2
    for name, want in expected(1).items():
        assert_same_run(dumps_of(path)[name], want, exact=False)
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT run_id, position, role FROM layers ORDER BY run_id, position").fetchall() == roles
    finally:
        con.close()


def test_migrate_keeps_unknown_tables(tmp_path):
    path = fixture(1, tmp_path)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE time_stats (run_id INTEGER, step INTEGER, t INTEGER, value REAL)")
    con.execute("CREATE INDEX time_stats_by_run ON time_stats(run_id)")
    con.executemany("INSERT INTO time_stats VALUES (1, ?, ?, ?)", [(s, t, s * 0.5) for s in range(3) for t in range(4)])
    con.commit()
    con.close()
    migrate(path)
    con = sqlite3.connect(path)
    try:
        assert con.execute("SELECT COUNT(*), SUM(value) FROM time_stats").fetchone() == (12, 6.0)
        assert con.execute("SELECT name FROM sqlite_master WHERE name='time_stats_by_run'").fetchone()
    finally:
        con.close()


def test_migrate_refuses_a_foreign_file_and_leaves_it_untouched(tmp_path):
    path = tmp_path / "notes.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE notes (body TEXT)")
    con.commit()
    con.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreError, match="not a graddoctor run store"):
        migrate(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_migrate_refuses_a_store_with_a_run_still_recording(tmp_path):
    path = fixture(1, tmp_path)
    con = sqlite3.connect(path)
    con.execute("UPDATE runs SET status='running', pid=?, host=? WHERE run_id=2",
                (__import__("os").getpid(), __import__("socket").gethostname()))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="still recording"):
        migrate(path)
    assert version_of(path) == 1


def _bigger_v1(tmp_path: Path, steps: int = 3000) -> Path:
    """The v1 fixture plus a synthetic run of 3000 steps x 40 layers x 3 stats, written as v1 rows."""
    path = fixture(1, tmp_path)
    store = RunStore(path)
    assert store.version == 1
    run_id = store.create_run("big", {}, {})
    store.set_layers(run_id, [(p, f"l{p}", "Linear", "param", 10, "{}") for p in range(40)])
    rng = np.random.default_rng(0)
    for a in range(0, steps, 500):
        rows = [(s, p, stat, float(rng.standard_normal())) for s in range(a, a + 500) for p in range(40)
                for stat in ("grad_norm", "weight_norm", "act_std")]
        store.write(run_id, steps=[(s, float(s)) for s in range(a, a + 500)], stats=rows)
    store.finish_run(run_id, "finished")
    store.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path


@pytest.mark.slow
def test_migrate_killed_at_any_moment_leaves_the_old_store_intact(tmp_path):
    path = _bigger_v1(tmp_path)
    big_before = graddoctor.load(path, name="big").stat_matrix("grad_norm")
    want = expected(1)
    code = f"import sys; sys.path.insert(0, {str(Path(graddoctor.__file__).parents[1])!r}); " \
           f"from graddoctor.store.migrate import migrate; migrate({str(path)!r}); print('done')"
    rng = random.Random(0)
    killed = 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.2, 1.5))
        proc.kill()
        out, err = proc.communicate()
        if "done" in out:
            break
        killed += 1
        got = dumps_of(path)  # the old store, whole: it still reads exactly as before
        for name, w in want.items():
            assert_same_run(got[name], w, exact=True)
        assert version_of(path) == 1
    assert killed >= 1, "every migration finished before it could be killed: make the store bigger"
    migrate(path)
    got = dumps_of(path)
    for name, w in want.items():
        assert_same_run(got[name], w, exact=False)
    np.testing.assert_allclose(graddoctor.load(path, name="big").stat_matrix("grad_norm"), big_before, rtol=F32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.db"]


def test_a_v1_store_takes_new_runs_as_v1_rows(tmp_path):
    path = fixture(1, tmp_path)
    store = RunStore(path)
    run_id = store.create_run("new", {}, {})
    store.set_layers(run_id, [(0, "l0", "Linear", "param", 10, "{}", "weight")])
    store.write(run_id, steps=[(0, 1.0)], stats=[StepStats(0, ("grad_norm",), np.array([[0.25]]), np.array([[True]]))])
    store.finish_run(run_id, "finished")
    store.close()
    assert graddoctor.load(path, name="new").stat("grad_norm", "l0").tolist() == [0.25]
    assert version_of(path) == 1


# -- v3 readers read what they show ----------------------------------------------------------------


def _v3_run(path: Path, n_layers: int = 150, n_steps: int = 40) -> np.ndarray:
    """A v3 run written through the writer in 4 flushes; returns its grad_norm matrix."""
    store = RunStore(path)
    run_id = store.create_run("r", {}, {})
    store.set_layers(run_id, [(p, f"l{p}", "Linear", "param", 10, "{}") for p in range(n_layers)])
    rng = np.random.default_rng(1)
    matrix = rng.random((n_layers, n_steps))
    writer = StoreWriter(store, run_id, flush_seconds=60)
    for s in range(n_steps):
        recorded = np.ones((2, n_layers), dtype=bool)
        recorded[0, ::3] = False  # dead_frac: not recorded at every third layer
        writer.put(steps=[(s, float(s))], stats=[StepStats(s, ("dead_frac", "grad_norm"),
                                                           np.stack([matrix[:, s] / 7, matrix[:, s]]), recorded)])
        if s % 10 == 9:
            writer.flush()
    writer.close("finished")
    store.close()
    return matrix


def test_v3_lazy_reads_agree_with_the_whole_matrix(tmp_path):
    path = tmp_path / "runs.db"
    matrix = _v3_run(path)
    r = graddoctor.load(path)
    source = r._stats.source
    series = r.stat("grad_norm", "l70")
    np.testing.assert_allclose(series, matrix[70], rtol=F32)
    assert not source._matrices, "one series read the whole statistic"
    row = r.row("l3", step=17)
    assert row["grad_norm"] == pytest.approx(matrix[3, 17], rel=F32) and "dead_frac" not in row  # l3: not recorded
    assert r.row("l4", step=17)["dead_frac"] == matrix[4, 17] / 7  # float64: exact
    assert not source._matrices
    latest = r.latest("l5")
    assert latest["grad_norm"] == pytest.approx(matrix[5, -1], rel=F32)
    whole = r.stat_matrix("dead_frac")
    assert np.isnan(whole[::3]).all() and not r.recorded("dead_frac")[::3].any()
    np.testing.assert_array_equal(whole[1::3], matrix[1::3] / 7)
    np.testing.assert_array_equal(r.stat("dead_frac", "l70"), whole[70])


def test_segments_per_flush_not_per_value(tmp_path):
    path = tmp_path / "runs.db"
    _v3_run(path, n_layers=150, n_steps=40)
    con = sqlite3.connect(path)
    try:
        # 4 flushes x 2 stats x 3 blocks of 64 layers
        assert con.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 4 * 2 * 3
        assert con.execute("SELECT COUNT(DISTINCT n_steps) FROM segments").fetchone()[0] == 1
    finally:
        con.close()


# -- the writer's backlog ----------------------------------------------------------------------------


def test_a_writer_that_falls_behind_blocks_the_producer_and_loses_nothing(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("slow", {}, {})
    store.set_layers(run_id, [(0, "l0", "Linear", "param", 10, "{}")])
    most = []

    def prepare(step):
        time.sleep(0.002)  # slower than the producer
        most.append(len(writer._records))
        return {"steps": [(step, float(step))],
                "stats": [StepStats(step, ("grad_norm",), np.array([[float(step)]]), np.array([[True]]))]}

    writer = StoreWriter(store, run_id, flush_seconds=0.05, prepare=prepare, max_backlog=16)
    for step in range(300):
        writer.put_record(step)
        assert len(writer._records) <= 16
    start = time.perf_counter()
    writer.close("finished")
    closing = time.perf_counter() - start
    store.close()
    assert writer.blocked_count > 0
    r = graddoctor.load(tmp_path / "runs.db")
    assert r.steps.tolist() == list(range(300))
    assert r.stat("grad_norm", "l0").tolist() == list(range(300))
    assert closing < 1.0, f"close took {closing:.2f} s for at most 2 x 16 records"


def test_a_writer_error_does_not_leave_the_producer_blocked(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id = store.create_run("bad", {}, {})

    def prepare(step):
        raise RuntimeError("disk on fire")

    writer = StoreWriter(store, run_id, flush_seconds=0.01, prepare=prepare, max_backlog=4)
    done = threading.Event()

    def produce():
        try:
            for step in range(100):
                writer.put_record(step)
        except StoreError:
            pass
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    assert done.wait(10), "the producer stayed blocked after the writer failed"
    store.close()


def test_cli_migrate(tmp_path, capsys):
    from graddoctor.cli import main

    path = fixture(1, tmp_path)
    assert main(["migrate", str(path)]) == 0
    assert "schema 1 -> 3 (2 runs" in capsys.readouterr().out
    assert version_of(path) == 3
    assert main(["migrate", str(path)]) == 0
    assert "already schema 3" in capsys.readouterr().out
    (tmp_path / "notes.txt").write_text("not a store")
    assert main(["migrate", str(tmp_path / "notes.txt")]) == 2
    assert "not a graddoctor run store" in capsys.readouterr().err
