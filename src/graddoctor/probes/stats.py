"""Pure on-device reductions behind every statistic. No `.item()`, no host sync, no model.

Each function takes tensors and returns 0-d or 1-d float tensors on the input's device. They are
built from the cheapest CPU/GPU primitives (sum, dot, sign, amax: one pass each) rather than
`std_mean` or `count_nonzero`, which cost 50-100x a sum on CPU (../shared/PERF.md). Combining
partial results (across micro-batches, across calls of a reused module) happens on the host in
float64, in `probes.record`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

import torch

HIST_BINS = 64
_FAST_DTYPES = (torch.float32, torch.float64)


class Scratch:
    """Work buffers reused across calls and steps, so that no reduction allocates.

    A fresh 0.5 MiB temporary per call costs about as much as the arithmetic on CPU (allocation and
    first-touch page faults). One flat buffer per (device, dtype, slot), grown to the largest
    output seen: memory about two activations of the largest watched layer.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}
        self._views: dict[tuple[tuple[torch.device, torch.dtype, int], int], torch.Tensor] = {}

    def get(self, like: torch.Tensor, slot: int) -> torch.Tensor:
        n = like.numel()
        key = (like.device, like.dtype, slot)
        view = self._views.get((key, n))
        if view is not None:
            return view
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, device=like.device, dtype=like.dtype)
            self._buffers[key] = buf
            self._views = {k: v for k, v in self._views.items() if k[0] != key}  # views of the old buffer
        self._views[(key, n)] = buf[:n]
        return self._views[(key, n)]


def moments(x: torch.Tensor, scratch: Scratch | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (k, sum(d), sum(d**2)) with d = x - k and k = x.flatten()[0], in at least float32.

    The mean is k + sum(d)/n. Shifting by one of the tensor's own values keeps the variance exact
    when the mean is far larger than the spread (outputs near 50 with std 0.03; a constant
    output), where sum(x**2) - n*mean**2 would cancel away every digit in float32. k is copied
    (one element) before any later in-place op can change it, and is 0 when it is not finite;
    nothing syncs.
    """
    flat = x.reshape(-1)
    if flat.numel() == 0:
        zero = flat.new_zeros((), dtype=_acc(flat))
        return zero, zero, zero
    # A non-finite first element would make every d NaN or -Inf: shift by 0 then, so an output holding
    # +Inf (and no -Inf or NaN) has mean +Inf, as it truly does (issue 17). On the device: no sync.
    # nan_to_num copies the element and zeroes it when not finite in one op (clone, isfinite and
    # where were eight: about 70 us a layer on this CPU, the same values).
    shift = torch.nan_to_num(flat[0], nan=0.0, posinf=0.0, neginf=0.0)
    d = torch.sub(flat, shift, out=scratch.get(flat, 0)) if scratch is not None else flat - shift
    if d.dtype in _FAST_DTYPES:
        return shift, d.sum(), torch.dot(d, d)
    return shift.float(), d.sum(dtype=_acc(x)), sumsq(d)


def sumsq(x: torch.Tensor) -> torch.Tensor:
    """Return sum(x**2) over all elements: the squared L2 norm, in at least float32."""
    if x.dtype in _FAST_DTYPES and x.is_contiguous():
        flat = x.view(-1)
        return torch.dot(flat, flat)
    return torch.linalg.vector_norm(x, dtype=_acc(x)).square()


def _acc(x: torch.Tensor) -> torch.dtype:
    """Accumulation dtype: float32 for half precision, the tensor's own otherwise."""
    return torch.promote_types(x.dtype, torch.float32)


def outside_count(
    x: torch.Tensor, lo: float | None, hi: float | None, scratch: Scratch | None = None
) -> torch.Tensor:
    """Number of elements with x < lo or x > hi (a side that is None is unbounded)."""
    flat = x.reshape(-1)
    work = scratch.get(flat, 1) if scratch is not None else torch.empty_like(flat)
    if lo is not None and hi is not None:  # |x - centre| - half > 0
        torch.sub(flat, (lo + hi) / 2.0, out=work).abs_().sub_((hi - lo) / 2.0)
    elif lo is not None:  # lo - x > 0
        torch.mul(flat, -1.0, out=work).add_(lo)
    elif hi is not None:  # x - hi > 0
        torch.sub(flat, hi, out=work)
    else:
        return x.new_zeros((), dtype=torch.float32)
    return work.clamp_min_(0).sign_().sum(dtype=torch.float32)


def activation_counts(
    x: torch.Tensor,
    channel_dim: int,
    *,
    nonnegative: bool = False,
    saturation: tuple[float | None, float | None] | None = None,
    scratch: Scratch | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Counts behind act_zero_frac, dead_frac and saturated_frac, sharing one |x| pass.

    Returns (number of nonzero elements, per-unit max |x| over every dim but `channel_dim` or
    None for 0/1-d x, number of saturated elements or None). A unit whose max |x| is 0 produced
    an exact zero for every sample and position: it did not fire.
    """
    scratch = scratch if scratch is not None else Scratch()
    flat = x.reshape(-1)
    magnitude = flat if nonnegative else torch.abs(flat, out=scratch.get(flat, 0))
    nonzero = torch.sign(magnitude, out=scratch.get(flat, 1)).sum(dtype=torch.float32)
    fired = None
    if x.ndim >= 2:
        fired = _unit_max(magnitude.view(x.shape), channel_dim % x.ndim).float()
    saturated = None
    if saturation is not None:
        lo, hi = saturation
        if lo is not None and hi is not None and lo == -hi and not nonnegative:  # |x| > hi
            work = torch.sub(magnitude, hi, out=scratch.get(flat, 1))
            saturated = work.clamp_min_(0).sign_().sum(dtype=torch.float32)
        else:
            saturated = outside_count(flat, lo, hi, scratch)
    return nonzero, fired, saturated


def _unit_max(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """max over every dim but `channel_dim`; for NCHW, the contiguous inner dims go first (2x faster)."""
    if channel_dim == 1 and x.ndim >= 3:
        return x.amax(dim=tuple(range(2, x.ndim))).amax(0)
    return x.amax(dim=tuple(d for d in range(x.ndim) if d != channel_dim))


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


def flat_snapshot(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Uninitialised buffers shaped like `params`: one allocation per (device, dtype), split into
    views (two ops instead of one allocation per parameter)."""
    out: list[torch.Tensor | None] = [None] * len(params)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        groups[(p.device, p.dtype)].append(i)
    for (device, dtype), idx in groups.items():
        sizes = [params[i].numel() for i in idx]
        parts = torch.empty(sum(sizes), device=device, dtype=dtype).split(sizes)
        for i, part in zip(idx, parts):
            out[i] = part.view(params[i].shape) if _fused_foreach([params[i]]) else part
    return out  # type: ignore[return-value]


def snapshot_sumsq(snapshot: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Copy `params` into `snapshot` and return sum(w**2) of each, read from the fresh copy.

    On CPU, tensor by tensor, so that the squares are summed while the copy is still in cache (the
    weight norm then costs little beyond the copy update_ratio needs anyway); where foreach kernels
    are fused (CUDA), as two multi-tensor launches. On CPU a snapshot entry may be flat (one
    dimension): `flat_snapshot`'s.
    """
    with torch.no_grad():
        if _fused_foreach(params):
            torch._foreach_copy_(list(snapshot), list(params))
            return _squared_norms(snapshot)
        out = []
        for snap, p in zip(snapshot, params):
            flat = snap.ndim == 1 and snap.is_contiguous() and snap.dtype in _FAST_DTYPES
            if flat and p.is_contiguous():
                snap.copy_(p.view(-1))
                out.append(torch.dot(snap, snap))
            else:
                snap.view(p.shape).copy_(p) if snap.shape != p.shape else snap.copy_(p)
                out.append(sumsq(snap))
        return out


def update_sumsq(
    snapshot: Sequence[torch.Tensor], params: Sequence[torch.Tensor], scratch: Scratch | None = None
) -> list[torch.Tensor]:  # scratch: unused since the differences go into the snapshot (kept for callers)
    """Return sum((w_before - w_after)**2) of each parameter; `snapshot` holds w_before and is
    overwritten by the differences (it is released after this step: no buffer of a parameter's
    size outlives the step). With fused foreach kernels (CUDA), in one launch.
    """
    with torch.no_grad():
        if _fused_foreach(params):
            torch._foreach_sub_(list(snapshot), list(params))
            return _squared_norms(snapshot)
        out = []
        for snap, p in zip(snapshot, params):
            if snap.is_contiguous() and p.is_contiguous():
                flat = snap if snap.ndim == 1 else snap.view(-1)
                diff = flat.sub_(p.view(-1))
                out.append(torch.dot(diff, diff) if diff.dtype in _FAST_DTYPES else sumsq(diff))
            else:
                out.append(sumsq(snap.view(p.shape) - p if snap.shape != p.shape else snap - p))
        return out


# update_ratio_est (docs/statistics.md): a fixed systematic sample of each parameter's elements.
SAMPLE_STRIDE = 67  # at most 1/67 of a large parameter's elements (1.5 % of its bytes)
SAMPLE_FLOOR = 4096  # ...but about this many of a smaller one (O(layers) memory), all of one this small
_PRIMES = tuple(p for p in range(2, 200) if all(p % q for q in range(2, int(p ** 0.5) + 1)))


def sample_plan(shapes: Sequence[torch.Size], seed: int = 0) -> list[tuple[int, int]]:
    """(offset, stride) of the elements sampled from each parameter (flattened, row-major).

    stride 1, offset 0: the whole parameter (at most SAMPLE_FLOOR elements). Otherwise the
    smallest prime stride of at least min(n / SAMPLE_FLOOR, SAMPLE_STRIDE) that divides none of
    the dimensions: about max(n / 67, 4096) elements, and the sampled positions walk every row and
    every column of a matrix (every tap of a convolution's filters) instead of one column. The
    offset in [0, stride) is fixed per parameter index from `seed` (no global random state), so
    that equal shapes are not all sampled at the same positions.
    """
    out = []
    for i, shape in enumerate(shapes):
        n = math.prod(shape)
        if n <= SAMPLE_FLOOR:
            out.append((0, 1))
            continue
        least = min(-(-n // SAMPLE_FLOOR), SAMPLE_STRIDE)
        stride = next((p for p in _PRIMES if p >= least and all(d % p for d in shape)), _PRIMES[-1])
        out.append(((seed * 1_000_003 + i * 2_654_435_761 + 12_345) % stride, stride))
    return out


def sample_scales(shapes: Sequence[torch.Size], plan: Sequence[tuple[int, int]]) -> list[float]:
    """n / m of each parameter: elements over sampled elements (1.0 when sampled whole)."""
    return [math.prod(shape) / len(range(off, math.prod(shape), stride)) for shape, (off, stride) in zip(shapes, plan)]


def _sampled(p: torch.Tensor, offset: int, stride: int) -> torch.Tensor:
    flat = p.detach().view(-1) if p.is_contiguous() else p.detach().reshape(-1)  # a copy only if not contiguous
    return flat if stride == 1 else flat[offset::stride]


def sample_snapshot(params: Sequence[torch.Tensor], plan: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Copy the sampled elements of each parameter (before the update) into one flat buffer per
    (device, dtype): one allocation and one `cat` per group, returned as one 1-d view per parameter."""
    views = [_sampled(p, off, stride) for p, (off, stride) in zip(params, plan)]
    out: list[torch.Tensor | None] = [None] * len(views)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, v in enumerate(views):
        groups[(v.device, v.dtype)].append(i)
    with torch.no_grad():
        for (device, dtype), idx in groups.items():
            sizes = [views[i].numel() for i in idx]
            flat = torch.empty(sum(sizes), device=device, dtype=dtype)
            torch.cat([views[i] for i in idx], out=flat)
            for i, part in zip(idx, flat.split(sizes)):
                out[i] = part
    return out  # type: ignore[return-value]


def sample_update_sumsq(
    sample: Sequence[torch.Tensor], params: Sequence[torch.Tensor], plan: Sequence[tuple[int, int]],
    scales: Sequence[float],
) -> list[torch.Tensor]:
    """Estimated sum((w_before - w_after)**2) of each parameter: (n/m) * the sample's sum of squares.

    `sample` (from `sample_snapshot`, taken before the update) is overwritten by the sampled
    differences. Exact for parameters sampled whole (scale 1).
    """
    with torch.no_grad():
        torch._foreach_sub_(list(sample), [_sampled(p, off, stride) for p, (off, stride) in zip(params, plan)])
        found = norms(sample)
        squares = torch._foreach_mul(found, found)
        if any(scale != 1.0 for scale in scales):
            torch._foreach_mul_(squares, list(scales))
        return list(squares)


def _fused_foreach(tensors: Sequence[torch.Tensor]) -> bool:
    """True when foreach ops run as fused multi-tensor kernels (CUDA), not as a per-tensor loop."""
    return bool(tensors) and all(t.is_cuda and t.dtype in _FAST_DTYPES for t in tensors)


def _squared_norms(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    found = torch._foreach_norm(list(tensors))
    return list(torch._foreach_mul(found, found))


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
