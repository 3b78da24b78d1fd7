"""Roles on read: a store without them (v1, or rows holding the column's default) derives them by
name, a migrated store holds them, and the diagnosis of a run does not depend on which it was."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
import torch

import graddoctor
from graddoctor.config import Role
from graddoctor.store.migrate import migrate
from graddoctor.store.view import LayerInfo

TESTS = Path(__file__).resolve().parents[1]
FIXTURE = TESTS / "fixtures" / "store_v1.db"
sys.path.insert(0, str(TESTS))
from models import CASE  # noqa: E402

V1_ROLES = [Role.WEIGHT, Role.ACTIVATION] * 8 + [Role.NORM, Role.WEIGHT]  # 8 Linear/Sigmoid, LayerNorm, Linear


def test_a_version_1_store_reads_with_roles_derived_by_name(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    assert [info.role for info in graddoctor.load(path).layer_info] == V1_ROLES


def test_a_migrated_version_1_store_holds_the_derived_roles(tmp_path):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    migrate(path)
    db = sqlite3.connect(path)
    stored = [role for (role,) in db.execute("SELECT role FROM layers ORDER BY position")]
    db.close()
    assert stored == [r.value for r in V1_ROLES]
    assert [info.role for info in graddoctor.load(path).layer_info] == V1_ROLES


def test_rows_written_before_roles_were_stored_read_by_name(tmp_path):
    path = tmp_path / "r.db"
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Tanh())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=path, name="r"):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
    db = sqlite3.connect(path)
    with db:  # what every v3 store written before this change holds
        db.execute("UPDATE layers SET role='other'")
    db.close()
    assert [i.role for i in graddoctor.load(path).layer_info] == [Role.WEIGHT, Role.NORM, Role.ACTIVATION]


def test_a_layer_info_without_a_role_derives_it():
    assert LayerInfo("h", "LSTM", "param", 10).role is Role.RECURRENT
    assert LayerInfo("e", "Embedding", "param", 10, {}, "embedding").role is Role.EMBEDDING
    assert LayerInfo("a", "GPT2Attention", "attention", 0, {}, "other").role is Role.OTHER
    assert LayerInfo("x", "Linear", "param", 10, {}, "a-role-from-the-future").role is Role.WEIGHT


def _train(name: str) -> graddoctor.store.RunView:
    case = CASE[name]
    torch.manual_seed(0)
    model = case.build()
    opt = case.optimizer([p for p in model.parameters() if p.requires_grad])
    with graddoctor.watch(model, opt, hist_every=0) as run:
        for batches in case.batches() * 2:
            opt.zero_grad()
            for x, y in batches:
                loss = case.loss(model(x), y)
                loss.backward()
            opt.step()
            run.log(loss=loss)
    return graddoctor.load(run)


@pytest.mark.parametrize("name", ["tied", "lstm", "batchnorm", "conv", "dead_and_saturated"])
def test_diagnosis_is_the_same_with_stored_and_derived_roles(name):
    run = _train(name)
    old = dataclasses.replace(run, layer_info=tuple(dataclasses.replace(i, role=None) for i in run.layer_info))
    assert [i.role for i in old.layer_info] == [i.role for i in run.layer_info]
    strip = ("run", "version", "graddoctor_version")
    new, was = graddoctor.diagnose(run).to_dict(), graddoctor.diagnose(old).to_dict()
    assert {k: v for k, v in new.items() if k not in strip} == {k: v for k, v in was.items() if k not in strip}
