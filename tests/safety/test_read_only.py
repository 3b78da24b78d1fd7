"""Reads never write: no side files appear, a live writer's WAL is read, and one that cannot be is a clear
error (issue 17, item 4)."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.errors import StoreError
from graddoctor.store import integrity
from safety_damage import fingerprint, record_store


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return record_store(tmp_path_factory.mktemp("ro") / "good.db")


def test_a_finished_store_is_read_immutable_and_no_side_file_appears(good, tmp_path):
    path = tmp_path / "runs.db"
    shutil.copyfile(good, path)
    assert integrity.read_only_uri(path).endswith("?mode=ro&immutable=1")
    before = fingerprint(path)
    graddoctor.load(path)
    graddoctor.diagnose(path)
    assert fingerprint(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"]


def test_a_live_writers_wal_is_read_and_left_alone(tmp_path):
    path = tmp_path / "live.db"
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=path, name="live"):
        for _ in range(3):
            model(torch.randn(4, 3)).sum().backward()
            opt.step()
        assert integrity.side_file(path, "-wal").exists()
        assert integrity.read_only_uri(path).endswith("?mode=ro")
        names = sorted(p.name for p in tmp_path.iterdir())
        view = graddoctor.load(path)  # the live run's committed steps are in the WAL
        assert view.name == "live"
        assert sorted(p.name for p in tmp_path.iterdir()) == names


def test_an_unreadable_wal_in_a_read_only_folder_says_what_to_do(good, tmp_path, monkeypatch):
    path = tmp_path / "runs.db"
    shutil.copyfile(good, path)
    integrity.side_file(path, "-wal").write_bytes(b"")
    monkeypatch.setattr(integrity.os, "access", lambda *args: False)  # root may write anywhere: pretend it may not
    err = integrity.cannot_open(path, sqlite3.OperationalError("unable to open database file"))
    assert isinstance(err, StoreError) and "read-only folder" in str(err) and "Copy the store" in str(err)


def test_watch_never_resets_a_garbage_wal(good, tmp_path):
    path = tmp_path / "runs.db"
    shutil.copyfile(good, path)
    integrity.side_file(path, "-wal").write_bytes(b"not a wal" * 100)
    before = fingerprint(path)
    model = nn.Linear(3, 2)
    with pytest.raises(StoreError, match="damaged store: .*-wal"):
        graddoctor.watch(model, torch.optim.SGD(model.parameters(), lr=0.1), store=path)
    assert fingerprint(path) == before
