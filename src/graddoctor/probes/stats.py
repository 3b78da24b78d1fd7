"""Pure on-device reductions behind every statistic. No `.item()`, no host sync, no model.

Each function takes tensors and returns 0-d or 1-d float tensors on the input's device. They are
built from the cheapest CPU/GPU primitives (sum, dot, sign, amax: one pass each) rather than
`std_mean` or `count_nonzero`, which cost 50-100x a sum on CPU (../shared/PERF.md). Combining
partial results (across micro-batches, across calls of a reused module) happens on the host in
float64, in `probes.record`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

HIST_BINS = 64
_FAST_DTYPES = (torch.float32, torch.float64)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (sum(x), sum(d), sum(d**2)) with d = x - x[0], accumulated in at least float32.

    The shift by one of the tensor's own values keeps the variance exact when the mean is far
    larger than the spread (outputs near 50 with std 0.03; a constant output): sum(x**2) - n*mean**2
    would cancel away every digit in float32. `x.view(-1)[0]` is read by the subtraction kernel
    itself, before any later in-place op: no copy, no sync.
    """
    flat = x.reshape(-1)
    if flat.numel() == 0:
        zero = flat.new_zeros((), dtype=_acc(flat))
        return zero, zero, zero
    d = flat - flat[0]
    if d.dtype in _FAST_DTYPES:
        return flat.sum(), d.sum(), torch.dot(d, d)
    return flat.sum(dtype=_acc(x)), d.sum(dtype=_acc(x)), sumsq(d)


def sumsq(x: torch.Tensor) -> torch.Tensor:
    """Return sum(x**2) over all elements: the squared L2 norm, in at least float32."""
    if x.dtype in _FAST_DTYPES and x.is_contiguous():
        flat = x.view(-1)
        return torch.dot(flat, flat)
    return torch.linalg.vector_norm(x, dtype=_acc(x)).square()


def _acc(x: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: float32 for half precision, the tensor's own otherwise."""
    return torch.promote_types(x.dtype, torch.float32)


def outside_count(x: torch.Tensor, lo: float | None, hi: float | None) -> torch.Tensor:
    """Number of elements with x < lo or x > hi (a side that is None is unbounded)."""
    if lo is not None and hi is not None:
        centre, half = (lo + hi) / 2.0, (hi - lo) / 2.0
        # hardshrink keeps exactly the elements with |x - centre| > half: one fused pass.
        shrunk = F.hardshrink(x - centre if centre else x, half)
        return shrunk.sign_().abs_().sum(dtype=torch.float32)
    if lo is not None:
        return torch.relu(lo - x).sign_().sum(dtype=torch.float32)
    if hi is not None:
        return torch.relu(x - hi).sign_().sum(dtype=torch.float32)
    return x.new_zeros((), dtype=torch.float32)


def activation_counts(
    x: torch.Tensor,
    channel_dim: int,
    *,
    nonnegative: bool = False,
    saturation: tuple[float | None, float | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Counts behind act_zero_frac, dead_frac and saturated_frac, sharing one |x| pass.

    Returns (number of nonzero elements, per-unit max |x| over every dim but `channel_dim` or
    None for 0/1-d x, number of saturated elements or None). A unit whose max |x| is 0 produced
    an exact zero for every sample and position: it did not fire.
    """
    magnitude = x if nonnegative else x.abs()
    nonzero = torch.sign(magnitude).sum(dtype=torch.float32)
    fired = None
    if x.ndim >= 2:
        dims = tuple(d for d in range(x.ndim) if d != channel_dim % x.ndim)
        fired = magnitude.amax(dim=dims).float()
    saturated = None
    if saturation is not None:
        lo, hi = saturation
        if lo is not None and hi is not None and lo == -hi and not nonnegative:
            saturated = F.hardshrink(magnitude, hi).sign_().sum(dtype=torch.float32)  # |x| > hi
        else:
            saturated = outside_count(x, lo, hi)
    return nonzero, fired, saturated


def norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """L2 norm of each tensor, as float tensors: fused per (device, dtype) with `_foreach_norm`.

    Sparse tensors (sparse embedding gradients) are normed over their stored values.
    """
    out: list[torch.Tensor | None] = [None] * len(tensors)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        if t.is_sparse:
            out[i] = torch.linalg.vector_norm(t.coalesce().values(), dtype=torch.float32)
        elif t.dtype in _FAST_DTYPES and hasattr(torch, "_foreach_norm"):
            groups[(t.device, t.dtype)].append(i)
        else:  # half precision: accumulate in float32 rather than in the tensor's own dtype
            out[i] = torch.linalg.vector_norm(t, dtype=torch.float32)
    for idx in groups.values():
        for i, n in zip(idx, torch._foreach_norm([tensors[i] for i in idx])):
            out[i] = n
    return out  # type: ignore[return-value]


def nonfinite_count(tensors: Iterable[torch.Tensor]) -> torch.Tensor | None:
    """Total number of NaN/Inf elements over `tensors` (None when there are none to count)."""
    counts = [(~torch.isfinite(t.coalesce().values() if t.is_sparse else t)).sum() for t in tensors]
    return torch.stack(counts).sum().float() if counts else None


def histogram(x: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """Histogram of the finite values of `x` over their own range, without a host sync.

    Returns a float tensor [lo, hi, nonfinite, count_0, ..., count_{bins-1}]: bins are equal-width
    over [lo, hi] (this tensor's own min and max: never an all-time range), and `nonfinite` counts
    NaN/Inf values, which are left out of the bins but never dropped silently.
    """
    x = x.detach().reshape(-1).float()
    finite = torch.isfinite(x)
    inf = torch.full((), float("inf"), device=x.device)  # a fill kernel: no host-to-device copy
    lo = torch.where(finite, x, inf).amin() if x.numel() else inf * 0
    hi = torch.where(finite, x, -inf).amax() if x.numel() else inf * 0
    width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    scaled = torch.where(finite, (x - lo) / width * bins, torch.zeros_like(x))
    index = scaled.long().clamp_(0, bins - 1)
    counts = torch.zeros(bins, device=x.device).scatter_add_(0, index, finite.float())
    nonfinite = (x.numel() - finite.sum()).float().reshape(1)
    return torch.cat([lo.reshape(1), hi.reshape(1), nonfinite, counts])
