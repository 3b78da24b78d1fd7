"""The two tiers of watch: what each step records, that the full tier's numbers are those of a run
recorded in full, the update_ratio snapshot's lifetime, the budget's interval, the cheap step's ops."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import graddoctor
from graddoctor.config import WatchConfig
from graddoctor.errors import ConfigError
from graddoctor.probes.schedule import interval

CHEAP = {"grad_norm", "grad_rms", "nonfinite_frac", "out_grad_norm"}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def _train(steps: int = 12, snapshots: list | None = None, **options):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    with graddoctor.watch(model, opt, hist_every=0, **options) as run:
        for _ in range(steps):
            x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
            if snapshots is not None:
                snapshots.append(run._param_side.held() or None)  # the test's peek: released after each step
        view = graddoctor.load(run)
    return view, model


def test_full_tier_schedule():
    cfg = WatchConfig(every=2, full_every=6, full_first=2, hist_every=0, attention_every=0)
    assert [s for s in range(0, 20, 2) if cfg.full_at(s)] == [0, 2, 6, 12, 18]
    assert WatchConfig().full_every == 10 and WatchConfig().hist_every == 100 and WatchConfig().attention_every == 10
    assert WatchConfig(every=3).full_every == 30
    with pytest.raises(ConfigError, match="multiple of every"):
        WatchConfig(every=2, full_every=5)


def test_cheap_steps_hold_the_cheap_tier_and_full_steps_equal_a_full_record():
    tiered, m1 = _train(full_every=4, full_first=1)
    full, m2 = _train(full_every=1)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)  # watching either way never changes training
    full_cols = [0, 4, 8]
    assert np.flatnonzero(tiered.recorded("act_std").any(axis=0)).tolist() == full_cols
    weight_layers = [i for i, info in enumerate(tiered.layer_info) if info.kind == "param"]
    assert tiered.recorded("grad_norm")[weight_layers].all()
    for stat in full.stats:
        a, b = tiered.stat_matrix(stat), full.stat_matrix(stat)
        rec_a, rec_b = tiered.recorded(stat), full.recorded(stat)
        if stat in CHEAP - {"out_grad_norm"}:
            assert np.array_equal(rec_a, rec_b) and np.array_equal(a[rec_a], b[rec_b]), stat
        else:  # full-tier steps: exactly the full record's cells and values
            assert np.array_equal(rec_a[:, full_cols], rec_b[:, full_cols]), stat
            assert np.array_equal(a[:, full_cols][rec_a[:, full_cols]], b[:, full_cols][rec_b[:, full_cols]]), stat
        if stat not in CHEAP:
            assert not rec_a[:, [1, 2, 3, 5]].any(), f"{stat} recorded on a cheap step"
    og = tiered.recorded("out_grad_norm")
    assert og[weight_layers].all() and not og[[1, 3]][:, [1, 2, 3]].any()  # cheap steps: weight layers' dL/dy
    assert np.array_equal(tiered.stat_matrix("out_grad_norm")[og], full.stat_matrix("out_grad_norm")[og])


@pytest.mark.parametrize("mode, stat", [("sample", "update_ratio_est"), ("exact", "update_ratio")])
def test_update_ratio_snapshot_lives_only_through_a_full_tier_step(mode, stat):
    snapshots: list = []
    view, _ = _train(steps=6, snapshots=snapshots, full_every=3, full_first=0, update_ratio=mode)
    assert snapshots == [None] * 6  # released after every step
    assert np.flatnonzero(view.recorded(stat).any(axis=0)).tolist() == [0, 3]


def test_budget_sets_the_interval_from_the_step_times():
    assert interval(full_period=0.15, cheap_period=0.1, budget=0.05, every=1) == 10  # +0.05 s / k <= 5 ms
    assert interval(0.15, 0.1, 0.05, every=4) == 12
    assert interval(0.1, 0.1, 0.03, every=1) == 1   # a free full tier: every step
    assert interval(10.0, 0.001, 0.01, every=1) == 10_000  # never off
    view, _ = _train(steps=14, budget=1e-6, full_first=4)  # a tiny budget: after the start, rarely full
    assert view.recorded("act_std").any(axis=0).tolist()[:4] == [True] * 4
    assert view.recorded("act_std").any(axis=0)[6:].sum() <= 1


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _ops_per_step(**options) -> list[int]:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    counts = []
    with graddoctor.watch(model, opt, hist_every=0, **options) as run:
        for _ in range(3):
            with _Ops() as ops:
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            counts.append(sum(ops.count.values()))
            run.log(loss=loss)
    return counts


def test_a_cheap_step_adds_a_few_ops_per_layer():
    full, cheap, _ = _ops_per_step(full_every=2, full_first=0)  # steps 0 (full), 1 (cheap), 2 (full)
    plain = _ops_per_step(every=10**6, full_first=0)[1]  # step 1 of every=10**6: not recorded at all
    assert plain < cheap < full
    assert cheap - plain <= 3 * 3 + 6  # dL/dy: 3 weight layers x (view, dot, sum); grad norms, the transfer
    assert full - plain >= 4 * (cheap - plain)
