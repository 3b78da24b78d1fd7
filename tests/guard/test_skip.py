"""guard 'skip': a step with non-finite gradients is dropped on the device, bit for bit, for each optimizer."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

import graddoctor
from graddoctor.errors import ConfigError
from graddoctor.probes.guard import Guard, GuardRule, GuardWarning, LargeUpdates, NonFinite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_train import make, step, watched  # noqa: E402

OPTIMIZERS = [
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.05)),
    ("sgd-wd", lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.01)),
    ("sgd-momentum", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=False)),
    ("sgd-momentum-foreach", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, foreach=True)),
    ("sgd-momentum-fused", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, fused=True)),
    ("adam", lambda p: torch.optim.Adam(p, lr=0.01, foreach=False)),
    ("adam-foreach-amsgrad", lambda p: torch.optim.Adam(p, lr=0.01, foreach=True, amsgrad=True)),
    ("adam-fused", lambda p: torch.optim.Adam(p, lr=0.01, fused=True)),
    ("adamw", lambda p: torch.optim.AdamW(p, lr=0.01, foreach=False)),
    ("adamw-foreach", lambda p: torch.optim.AdamW(p, lr=0.01, foreach=True)),
    ("adamw-fused", lambda p: torch.optim.AdamW(p, lr=0.01, fused=True)),
]


def _reference(make_opt, bad: int, n: int) -> list[torch.Tensor]:
    """The same training, unwatched, that simply never takes step `bad`: the oracle of a skip."""
    model, batches = make()
    opt = make_opt(model.parameters())
    for t in range(n):
        if t != bad:
            step(model, opt, *batches[t])
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("make_opt", [o for _, o in OPTIMIZERS], ids=[n for n, _ in OPTIMIZERS])
@pytest.mark.parametrize("bad", [0, 4])  # 0: the skipped step is the one that would create the state
def test_nan_step_is_skipped_bit_for_bit(make_opt, bad, store_path):
    model, batches = make()
    opt = make_opt(model.parameters())
    n = 8
    before_bad = None
    with pytest.warns(GuardWarning, match="nonfinite"), watched(model, opt, store_path, "default"):
        for t in range(n):
            if t == bad:
                before_bad = [p.detach().clone() for p in model.parameters()]
            step(model, opt, *batches[t], poison=t == bad)
            if t == bad:
                assert all(torch.equal(a, p) for a, p in zip(before_bad, model.parameters()))
    # the step was not applied and training went on as if that batch had never come
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), _reference(make_opt, bad, n)))
    for state in opt.state.values():
        assert all(torch.isfinite(v).all() for v in state.values() if isinstance(v, torch.Tensor))
    actions = graddoctor.load(store_path).guard_actions
    skips = [a for a in actions if a.action == "skip"]
    assert [(a.step, a.trigger) for a in skips] == [(bad, "nonfinite")]
    assert any(a.action == "warn" and a.step == bad for a in actions)


def test_skip_on_unrecorded_steps_is_decided_and_recorded(store_path):
    model, batches = make()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with pytest.warns(GuardWarning), watched(model, opt, store_path, "default", every=4):
        for t in range(10):
            step(model, opt, *batches[t], poison=t in (5, 9))  # 5: mid-interval; 9: after the last record
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), _reference_many(opt_cls=torch.optim.Adam, bad={5, 9})))
    skips = [(a.step, a.trigger) for a in graddoctor.load(store_path).guard_actions if a.action == "skip"]
    assert skips == [(5, "nonfinite"), (9, "nonfinite")]


def _reference_many(opt_cls, bad: set[int]) -> list[torch.Tensor]:
    model, batches = make()
    opt = opt_cls(model.parameters(), lr=0.01)
    for t in range(10):
        if t not in bad:
            step(model, opt, *batches[t])
    return [p.detach().clone() for p in model.parameters()]


def test_update_ratio_of_a_skipped_step_is_zero(store_path):
    model, batches = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with warnings.catch_warnings(), watched(model, opt, store_path, "default"):
        warnings.simplefilter("ignore", GuardWarning)
        for t in range(4):
            step(model, opt, *batches[t], poison=t == 2)
    r = graddoctor.load(store_path)
    ratios = r.stat_matrix("update_ratio_est")  # the default: a sample (these small layers whole: exact)
    assert (ratios[:, 2][~torch.isnan(torch.tensor(ratios[:, 2])).numpy()] == 0).all()
    assert (ratios[:, 3] > 0).any()


@pytest.mark.parametrize("make_opt, match", [
    (lambda p: torch.optim.RMSprop(p, lr=0.01), "supports SGD, Adam, AdamW"),
    (lambda p: torch.optim.LBFGS(p), "supports SGD, Adam, AdamW"),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5), "dampening"),
], ids=["rmsprop", "lbfgs", "sgd-dampening"])
def test_skip_is_refused_where_it_cannot_be_undone(make_opt, match, store_path):
    model, _ = make()
    with pytest.raises(ConfigError, match=match):
        watched(model, make_opt(model.parameters()), store_path, "default")


def test_warn_and_stop_work_with_any_optimizer(store_path):
    model, batches = make()
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01)
    guard = Guard(rules=(GuardRule(NonFinite(), "warn"), GuardRule(LargeUpdates(), "warn")))
    with pytest.warns(GuardWarning), watched(model, opt, store_path, guard):
        for t in range(3):
            step(model, opt, *batches[t], poison=t == 1)
    actions = graddoctor.load(store_path).guard_actions
    assert actions and {a.action for a in actions} == {"warn"} and actions[0].step == 1  # nothing skipped


def test_skip_needs_no_trigger_that_cannot_skip():
    with pytest.raises(ConfigError, match="cannot skip"):
        GuardRule(LargeUpdates(), ("warn", "skip"))
    with pytest.raises(ConfigError, match="unknown"):
        GuardRule(NonFinite(), "explode")
