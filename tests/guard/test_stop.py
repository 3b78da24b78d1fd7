"""guard 'stop': GuardStop at the step boundary, with the finding, after the store is flushed."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

import graddoctor
from graddoctor.probes.guard import Guard, GuardRule, GuardStop, GuardWarning, NonFinite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_train import make, step, watched  # noqa: E402


def test_stop_on_nonfinite_within_the_step(store_path):
    model, batches = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = Guard(rules=(GuardRule(NonFinite(), "stop"),))
    reached = []
    with pytest.raises(GuardStop) as info, watched(model, opt, store_path, guard):
        for t in range(10):
            reached.append(t)
            step(model, opt, *batches[t], poison=t == 6)
    assert reached[-1] == 6  # raised by step 6's optimizer.step(), before step 7 began
    assert info.value.event.step == 6 and info.value.event.trigger == "nonfinite"
    r = graddoctor.load(store_path)
    assert list(r.steps) == list(range(7))  # every step before it (and the one that stopped)
    assert r.status == "failed" and "GuardStop" in r.error
    assert [(a.step, a.action) for a in r.guard_actions] == [(6, "stop")]


def test_default_stops_after_consecutive_skips(store_path):
    model, batches = make()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    reached = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GuardWarning)
        with pytest.raises(GuardStop, match="5 steps in a row"), watched(model, opt, store_path, "default"):
            for t in range(12):
                reached.append(t)
                step(model, opt, *batches[t], poison=t >= 3)  # the data went bad for good at step 3
    assert reached[-1] == 7  # the 5th skip: 3, 4, 5, 6, 7
    r = graddoctor.load(store_path)
    assert list(r.steps) == list(range(8))
    assert [a.step for a in r.guard_actions if a.action == "skip"] == [3, 4, 5, 6, 7]
    assert [(a.step, a.trigger) for a in r.guard_actions if a.action == "stop"] == [(7, "consecutive_skips")]
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad steps never reached the weights


def test_callback_gets_the_event_and_is_recorded(store_path):
    model, batches = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    seen = []
    guard = Guard(rules=(GuardRule(NonFinite(), ("skip", seen.append)),))
    with watched(model, opt, store_path, guard):
        for t in range(4):
            step(model, opt, *batches[t], poison=t == 2)
    assert [e.step for e in seen] == [2]
    assert [(a.step, a.action) for a in graddoctor.load(store_path).guard_actions] == [(2, "skip"), (2, "callback")]


def test_guard_off_by_default_changes_nothing(store_path):
    model, batches = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with watched(model, opt, store_path, None):
        for t in range(3):
            step(model, opt, *batches[t], poison=t == 1)
    assert not all(torch.isfinite(p).all() for p in model.parameters())  # no guard: the NaN step was applied
    assert graddoctor.load(store_path).guard_actions == ()
