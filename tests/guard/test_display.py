"""Every guard action is in the store (an additive table) and shown by diagnose, its JSON, show and the report."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import graddoctor
from graddoctor.probes.guard import GuardWarning
from graddoctor.store.schema import SCHEMA_VERSION

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_train import make, step, watched  # noqa: E402


@pytest.fixture
def guarded_store(store_path):
    model, batches = make()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GuardWarning)
        with watched(model, opt, store_path, "default"):
            for t in range(8):
                step(model, opt, *batches[t], poison=t == 3)
    return store_path


def test_actions_are_in_the_store_and_the_schema_version_is_unchanged(guarded_store):
    con = sqlite3.connect(guarded_store)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # guard_actions is additive: no version of its own
    rows = con.execute("SELECT step, action, trigger FROM guard_actions ORDER BY rowid").fetchall()
    assert (3, "skip", "nonfinite") in rows and (3, "warn", "nonfinite") in rows


def test_a_store_without_guard_has_no_table_and_reads_as_no_actions(store_path):
    model, batches = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with watched(model, opt, store_path, None):
        step(model, opt, *batches[0])
    con = sqlite3.connect(store_path)
    assert con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name='guard_actions'").fetchone()[0] == 0
    assert graddoctor.load(store_path).guard_actions == ()
    assert json.loads(graddoctor.diagnose(store_path).to_json())["guard_actions"] == []


def test_diagnose_text_and_json_show_the_actions(guarded_store):
    d = graddoctor.diagnose(guarded_store)
    assert "guard actions while training (1 skip, 1 warn)" in str(d)
    assert "step 3: skip [nonfinite]" in str(d)
    actions = json.loads(d.to_json())["guard_actions"]
    assert actions[0]["step"] == 3 and actions[0]["action"] == "skip"
    assert actions[0]["evidence"]["grad_norm_total"] == "nan"  # JSON-safe, never dropped


@pytest.mark.slow
def test_show_and_report_show_the_actions(guarded_store, tmp_path):
    cli = [sys.executable, "-m", "graddoctor"]
    shown = subprocess.run([*cli, "show", str(guarded_store)], capture_output=True, text=True, check=True).stdout
    assert "step 3: skip [nonfinite]" in shown
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.html"
    subprocess.run([*cli, "report", str(guarded_store), "-o", str(out)], capture_output=True, text=True, check=True)
    html = out.read_text()
    assert "Guard actions while training (2)" in html and "the update was not applied" in html
