"""fastrows.step_block gives what the reference path (record.aggregate + derive.derive) gives, on every zoo model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graddoctor
from graddoctor.probes.derive import derive
from graddoctor.probes.fastrows import group, step_block
from graddoctor.probes.record import aggregate
from graddoctor.probes.rows import step_stats
from tests.models import CASES, nonfinite_grad


def payloads(case, **watch):
    model = case.build()
    opt = case.optimizer(model.parameters())
    with graddoctor.watch(model, opt, flush_seconds=3600, hist_every=0, **watch) as run:
        for micro in case.batches():
            opt.zero_grad()
            for x, y in micro:
                case.loss(model(x), y).backward()
            opt.step()
        builder = run._writer.prepare.__self__
        records = list(run._writer._records)
    return builder, records


def reference(builder, p):
    amp = next((v for s, k, v in p.scalars if k == "amp_scale" and s == p.step), None)
    derived = derive(builder.plan, aggregate(p.keys, p.values), p.numel, p.nonfinite, amp)
    return step_stats(p.step, derived, builder.position, builder.next_position)


def assert_same(fast, ref):
    assert fast is not None, "the fast path gave up on an ordinary model"
    assert fast.names == ref.names
    np.testing.assert_array_equal(fast.recorded, ref.recorded)
    np.testing.assert_allclose(fast.values, ref.values, rtol=1e-12, atol=1e-300, equal_nan=True)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fast_block_matches_the_reference_derive(case):
    builder, records = payloads(case)
    assert records
    for p in records:
        builder._assign_positions(p)
        amp = next((v for s, k, v in p.scalars if k == "amp_scale" and s == p.step), None)
        fast = step_block(builder.layers, group(p.keys), p.values, p.numel, p.nonfinite, amp, p.step,
                          builder._positions(), builder.next_position)
        assert_same(fast, reference(builder, p))


def test_fast_block_keeps_nan_and_inf_where_the_reference_has_them():
    model = nonfinite_grad()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, flush_seconds=3600, hist_every=0) as run:
        for _ in range(2):
            x = torch.randn(8, model[0].in_features)
            x[0, 0] = float("inf")
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
        builder = run._writer.prepare.__self__
        records = list(run._writer._records)
    for p in records:
        builder._assign_positions(p)
        fast = step_block(builder.layers, group(p.keys), p.values, p.numel, p.nonfinite, None, p.step,
                          builder._positions(), builder.next_position)
        ref = reference(builder, p)
        assert (~np.isfinite(ref.values[ref.recorded])).any()
        assert_same(fast, ref)
