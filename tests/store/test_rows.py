"""RowBuilder keeps a step's Layout while steps bring the same keys; what it builds still equals the reference.

The layout (which partial belongs to which code and layer, the calls' order) is worked out once and
kept; these tests change the keys and the calls between steps and check every step against
record.aggregate + derive.derive, and check that the numpy block, not the reference path, made them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

import graddoctor
from graddoctor.probes.derive import derive
from graddoctor.probes.fastrows import step_block
from graddoctor.probes.record import aggregate
from graddoctor.probes.rows import step_stats


class Branchy(nn.Module):
    """A layer that runs on odd steps only: the keys change from step to step."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = nn.Tanh()
        self.odd = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.a(x))
        if self.odd:
            h = self.act(self.b(h))
        return self.c(h)


class TwoAttention(nn.Module):
    """Two attention layers (their statistics take derive's own per-layer formulas)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.att1 = nn.MultiheadAttention(8, 2, batch_first=True)
        self.att2 = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.att1(h, h, h)[0]
        h = h + self.att2(h, h, h)[0]
        return self.out(h)


def record(model, batches, **watch):
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graddoctor.watch(model, opt, flush_seconds=3600, hist_every=0, full_every=1, **watch) as run:
        for step, x in enumerate(batches):
            if isinstance(model, Branchy):
                model.odd = step % 2 == 1
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        builder = run._writer.prepare.__self__
        records = list(run._writer._records)
    return builder, records


def reference(builder, p):
    derived = derive(builder.plan, aggregate(p.keys, p.values), p.numel, p.nonfinite, None)
    return step_stats(p.step, derived, builder.position, builder.next_position)


def assert_same(block, ref):
    assert block.names == ref.names
    np.testing.assert_array_equal(block.recorded, ref.recorded)
    np.testing.assert_allclose(block.values, ref.values, rtol=1e-12, atol=1e-300, equal_nan=True)


def check(builder, records):
    """Each step: build() equals the reference, and the fast block (on the kept layout) made it."""
    for p in records:
        block = builder.build(p)["stats"][0]
        ref = reference(builder, p)
        fast = step_block(builder.layers, builder._layout(p.keys), p.values, p.numel, p.nonfinite, None, p.step,
                          builder._positions(), builder.next_position, finite_only=True)
        assert fast is not None, "the fast path gave up"
        assert_same(block, ref)
        assert_same(fast, ref)


def test_steps_whose_keys_and_calls_change_get_their_own_layout_and_the_reference_values():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 6, generator=g) for n in (8, 8, 5, 5, 8, 3)]  # the calls' sizes change too
    torch.manual_seed(0)
    builder, records = record(Branchy(), batches)
    assert len({len(p.keys) for p in records}) == 2  # the branch's partials come and go
    check(builder, records)
    assert len(builder._layouts) == 2  # one per set of keys, kept
    again = builder._layout(list(records[-1].keys))
    assert again is builder._layout(records[-1].keys)


def test_two_attention_layers_each_get_their_statistics_on_the_fast_path():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    builder, records = record(TwoAttention(), [torch.randn(3, 5, 4, generator=g) for _ in range(3)],
                              attention_every=1)
    check(builder, records)
    block = builder.build(records[-1])["stats"][0]
    assert "attn_logit_max" in block.names
    row = block.recorded[block.names.index("attn_logit_max")]
    assert row.sum() == 2  # both layers, neither overwritten by the other


def test_a_kept_layout_is_not_changed_by_the_steps_that_use_it():
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    builder, records = record(Branchy(), [torch.randn(8, 6, generator=g) for _ in range(4)])
    first = [builder.build(p)["stats"][0] for p in records]
    second = [builder.build(p)["stats"][0] for p in records]  # every layout and calls cache now warm
    for a, b in zip(first, second):
        assert a.names == b.names
        assert np.array_equal(a.values, b.values, equal_nan=True) and np.array_equal(a.recorded, b.recorded)
