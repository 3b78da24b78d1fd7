"""The partial results of one layer output and of its dL/d output, read in as few ops as eager allows.

`OutputReader.output` returns every activation partial of a layer output, `OutputReader.out_grad`
those of its gradient, as (code, 0-d or 1-d tensor) pairs that `StepRecord.add` takes. Two paths:

- "fused" (the default): the same partials as the reference, each computed the same way element
  by element, in fewer aten ops and passes: no `detach` (the reads run under `no_grad`), no
  per-call view of the work buffers (views are kept per shape), the shift read with one `take`,
  the buffer of the shifted values reused for |y|, and counts beyond a bound as
  `threshold_ -> sign_ -> sum` (three ops) where the reference takes four or six. Measured in
  docs/overhead.md ("Fused statistics"), with `benchmarks/fused_stats.py`.
- "reference": `stats.moments` and `stats.activation_counts`, unchanged: the oracle the fused
  path is held to (tests/probes/test_fused.py) and the path taken for any tensor the fused one
  does not cover (non-contiguous, half precision, empty, sparse).

Both run on any device without a host sync. Semantics are the reference's, NaN and Inf included:
the shift is the first element, 0 when it is not finite (issue 17: an output holding +Inf has
mean +Inf); `sign` counts a NaN element as neither nonzero nor saturated (torch.sign(NaN) is 0
on CPU), on both paths; the moments carry the NaN into act_mean and act_std.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from . import stats
from .record import NZ, OG, OGS, S, SAT, SD, SS, UNIT

PATHS = ("fused", "reference")
_FAST = (torch.float32, torch.float64)
Partials = list[tuple[str, torch.Tensor]]


class OutputReader:
    """Reads layer outputs and output gradients for one run; owns its work buffers.

    Memory: two buffers the size of the largest watched output (as the reference's Scratch),
    per (device, dtype).
    """

    def __init__(self, path: str = "fused") -> None:
        if path not in PATHS:
            raise ConfigError(f"stats={path!r}: expected one of {PATHS} (\"fused\", the default, or \"reference\", "
                              "the oracle path); pass WatchConfig(stats=\"fused\").")
        self.path = path
        self.scratch = stats.Scratch()
        self._shaped: dict[tuple[int, torch.Size, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._first: dict[torch.device, torch.Tensor] = {}

    def output(self, y: torch.Tensor, layer: Any, channel_dim: int) -> Partials:
        """Partials of layer output `y`: S, SD, SS, and for layers that count zeros NZ, UNIT (2+ dims)
        and SAT (layers with saturation bounds). `layer` is the LayerPlan; `channel_dim` the units' dim."""
        if self.path == "reference" or not _fusable(y):
            return reference_output(y.detach(), layer, channel_dim, self.scratch)
        with torch.no_grad():
            return self._fused_output(y, layer, channel_dim)

    def out_grad(self, g: torch.Tensor) -> Partials:
        """OG (sum of squares of dL/d output) and OGS (its sum: finite iff the values are)."""
        g = g.detach() if g.requires_grad else g
        return [(OG, stats.sumsq(g)), (OGS, g.sum(dtype=torch.float32) if g.dtype != torch.float64 else g.sum())]

    # -- the fused path ---------------------------------------------------------------------------

    def _fused_output(self, y: torch.Tensor, layer: Any, channel_dim: int) -> Partials:
        # shift: the first element, copied (an in-place op later cannot change it), 0 if not finite
        shift = torch.nan_to_num(torch.take(y, self._zero_index(y.device)), nan=0.0, posinf=0.0, neginf=0.0)
        d, d_flat = self._buffer(y, 0)
        torch.sub(y, shift, out=d)
        out = [(S, shift), (SD, d.sum()), (SS, torch.dot(d_flat, d_flat))]
        if not layer.counts_zeros:
            return out
        if layer.nonnegative:
            magnitude = y
        else:  # |y| into the shifted values' buffer: they are summed already
            magnitude = torch.abs(y, out=d)
        signs, signs_flat = self._buffer(y, 1)
        out.append((NZ, torch.sign(magnitude, out=signs).sum(dtype=torch.float32)))
        if y.ndim >= 2:
            out.append((UNIT, stats._unit_max(magnitude, channel_dim % y.ndim).float()))
        if layer.saturation is not None:
            out.append((SAT, self._saturated(y, magnitude, signs, layer)))
        return out

    def _saturated(self, y: torch.Tensor, magnitude: torch.Tensor, work: torch.Tensor, layer: Any) -> torch.Tensor:
        """Elements outside (lo, hi), as the reference counts them (a value on a bound is inside)."""
        lo, hi = layer.saturation
        if lo is not None and hi is not None and lo == -hi and not layer.nonnegative:  # |y| > hi
            if magnitude is y:
                magnitude = torch.abs(y, out=work)
            return torch.threshold_(magnitude, hi, 0.0).sign_().sum(dtype=torch.float32)
        if lo is not None and hi is not None:  # |y - centre| > half
            torch.sub(y, (lo + hi) / 2.0, out=work).abs_()
            return torch.threshold_(work, (hi - lo) / 2.0, 0.0).sign_().sum(dtype=torch.float32)
        if lo is not None:  # lo - y > 0
            return torch.mul(y, -1.0, out=work).add_(lo).clamp_min_(0).sign_().sum(dtype=torch.float32)
        if hi is not None:  # y - hi > 0
            return torch.threshold_(torch.sub(y, hi, out=work), 0.0, 0.0).sign_().sum(dtype=torch.float32)
        return y.new_zeros((), dtype=torch.float32)

    def _buffer(self, like: torch.Tensor, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A work buffer shaped like `like` and its flat view, both kept: no view op per call."""
        key = (slot, like.shape, like.device, like.dtype)
        found = self._shaped.get(key)
        flat = self.scratch.get(like, slot)
        if found is None or found[1] is not flat:  # new shape, or the buffer grew (Scratch made a new view)
            found = (flat.view(like.shape), flat)
            self._shaped[key] = found
        return found

    def _zero_index(self, device: torch.device) -> torch.Tensor:
        index = self._first.get(device)
        if index is None:
            index = self._first[device] = torch.zeros((), dtype=torch.long, device=device)
        return index


def _fusable(y: torch.Tensor) -> bool:
    return y.dtype in _FAST and y.layout == torch.strided and y.is_contiguous() and y.numel() > 0


def reference_output(y: torch.Tensor, layer: Any, channel_dim: int, scratch: stats.Scratch) -> Partials:
    """The reference path: `stats.moments` and `stats.activation_counts`, as they always were."""
    total, shifted, squares = stats.moments(y, scratch)
    out = [(S, total), (SD, shifted), (SS, squares)]
    if layer.counts_zeros:
        nonzero, fired, saturated = stats.activation_counts(
            y, channel_dim, nonnegative=layer.nonnegative, saturation=layer.saturation, scratch=scratch,
        )
        out.append((NZ, nonzero))
        if fired is not None:
            out.append((UNIT, fired))
        if saturated is not None:
            out.append((SAT, saturated))
    return out
