"""copy_run and the shards of a distributed sweep: a run copied into another store reads back the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.errors import StoreError
from graddoctor.store.copy import copy_run
from graddoctor.store.sqlite import RunStore
from graddoctor.train.shard import in_shard, merge_shard


def record(path, name, *, seed=0, steps=5, act=nn.Tanh):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), act(), nn.Linear(8, 8), act(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=path, name=name, hist_every=2) as run:
        for _ in range(steps):
            loss = model(torch.randn(16, 6)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)


def assert_same_run(a, b):
    assert a.name == b.name and a.status == b.status and a.layers == b.layers
    assert np.array_equal(a.steps, b.steps) and np.array_equal(a.wall_time, b.wall_time)
    assert sorted(a.stats) == sorted(b.stats) and sorted(a.scalars) == sorted(b.scalars)
    for stat in a.stats:
        assert np.array_equal(a.stat_matrix(stat), b.stat_matrix(stat), equal_nan=True), stat
        assert np.array_equal(a.recorded(stat), b.recorded(stat)), stat
    for key in a.scalars:
        assert np.array_equal(a.scalar(key), b.scalar(key), equal_nan=True), key
    assert a.config == b.config


def test_a_copied_run_reads_back_as_the_original_beside_the_targets_own_runs(tmp_path):
    src, dst = tmp_path / "shard.db", tmp_path / "study.db"
    record(dst, "mine", act=nn.ReLU)  # the target's statistic ids are its own, in another order
    record(src, "copied", seed=3)
    target = RunStore(dst)
    try:
        new = copy_run(src, 1, target)
    finally:
        target.close()
    assert new == 2
    assert_same_run(graddoctor.load(src, name="copied"), graddoctor.load(dst, name="copied"))
    mine = graddoctor.load(dst, name="mine")
    assert mine.run_id == 1 and len(mine.steps) == 5 and "dead_frac" in mine.stats


def test_copy_refuses_a_missing_run_and_leaves_the_target_as_it_was(tmp_path):
    src, dst = tmp_path / "shard.db", tmp_path / "study.db"
    record(src, "a")
    record(dst, "b")
    target = RunStore(dst)
    try:
        with pytest.raises(StoreError, match="no run 7"):
            copy_run(src, 7, target)
        assert target.con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    finally:
        target.close()


def test_a_shard_trained_elsewhere_merges_into_the_store(tmp_path):
    study = tmp_path / "study.db"
    done, shard = in_shard(lambda path: record(path, "remote", seed=1) or "trained")
    assert done == "trained" and shard[:16] == b"SQLite format 3\x00"
    assert merge_shard(shard, str(study)) == [1]
    record(tmp_path / "local.db", "remote", seed=1)
    local, merged = graddoctor.load(tmp_path / "local.db"), graddoctor.load(study)
    for stat in local.stats:  # the same seeded run, trained twice: the same numbers
        assert np.array_equal(local.stat_matrix(stat), merged.stat_matrix(stat), equal_nan=True), stat
