"""A store written by schema version 1 (tests/fixtures/store_v1.db, made by make_store_v1.py beside it) still reads."""

import shutil
import sqlite3
from pathlib import Path

import graddoctor

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store_v1.db"


def test_the_fixture_is_a_version_1_store():
    with sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)


def test_a_version_1_store_loads_and_diagnoses(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)  # the fixture itself is never opened for writing
    run = graddoctor.load(path)
    assert run.name == "sigmoid8"
    assert list(run.steps) == list(range(20))
    assert [info.type for info in run.layer_info][:4] == ["Linear", "Sigmoid", "Linear", "Sigmoid"]
    assert len(run.layers) == 18
    assert "vanishing_gradient" in graddoctor.diagnose(path).kinds
