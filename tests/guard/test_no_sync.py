"""The guard adds no device-to-host read to a training step: its verdicts ride in the recorded step's copy.

Counted two ways: every Tensor method that reads a value on the host (item, tolist, numpy, cpu,
bool/float/int) is wrapped with a counter, and a TorchDispatchMode counts `_local_scalar_dense`
(what item() and bool() reach on any device) and copies whose destination is the CPU.
"""

from __future__ import annotations

import collections
import contextlib
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_train import make, step, watched  # noqa: E402

from graddoctor.probes.guard import GradSpike, Guard, GuardRule, NonFinite  # noqa: E402

READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__")


class HostReads(TorchDispatchMode):
    def __init__(self, counts: collections.Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            self.counts["_local_scalar_dense"] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting(counts: collections.Counter):
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, fn):
        def counted(self, *a, **k):
            counts[name] += 1
            return fn(self, *a, **k)
        return counted

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        with HostReads(counts):
            yield
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def _count(store, guard, every: int) -> collections.Counter:
    model, batches = make()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    counts: collections.Counter = collections.Counter()
    with watched(model, opt, store, guard, every=every) as run:
        for t in range(3):  # warm-up: first-step allocations and checks
            step(model, opt, *batches[t])
        with counting(counts):
            for t in range(3, 12):
                loss = step(model, opt, *batches[t])
                run.log(loss=loss)
    return counts


SPIKE_SKIP = Guard(rules=(GuardRule(NonFinite(), ("warn", "skip")), GuardRule(GradSpike(min_history=2), ("warn", "skip"))))


@pytest.mark.parametrize("every", [1, 4])
@pytest.mark.parametrize("guard", ["default", SPIKE_SKIP], ids=["default", "spike-skip"])
def test_guard_adds_no_host_read(tmp_path, every, guard):
    plain = _count(tmp_path / "a.db", None, every)
    guarded = _count(tmp_path / "b.db", guard, every)
    assert plain["numpy"] > 0  # the counter sees the one transfer per recorded step
    assert guarded == plain
