"""StepRecord: what one recorded step measured, kept on the device until the step closes.

Hooks append 0-d or 1-d tensors with a key (layer index, code). `transfer` moves all of them to
the host in one copy per device; `aggregate` combines partial results (several calls of a module,
several micro-batches) in float64 on the host, by each code's rule in probes/partials.py.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

# The codes of partial results and how each combines: probes/partials.py (re-exported here, where
# the hooks and readers have always imported them from).
from .partials import (  # noqa: F401
    AENT, AMAX, AROWS, COMBINE, GN, GPRE, GSQ, HIST_ACT, HIST_GRAD, LMAX, LROWS, LSE, MAXED, NORMS, NZ, OG, OGS,
    PER_CALL, S, SAT, SD, SQUARED, SS, UE, UN, UNIT, USQ, WN, WSQ, Combine,
)

Key = tuple[int, str]


class StepRecord:
    """Partial statistics of one optimizer step, as device tensors keyed by (layer, code)."""

    def __init__(self, step: int, *, hist: bool = False, full: bool = True) -> None:
        self.step = step
        self.full = full or hist  # the full tier at this step (else the cheap tier alone)
        self.hist = hist  # take histograms at this step
        self.keys: list[Key] = []
        self.values: list[torch.Tensor] = []
        self.numel: dict[int, list[int]] = defaultdict(list)  # output elements per call, per layer
        self.fired: list[int] = []                      # layers in the order their forward ran
        self.calls: list[int] = []                      # layer of every forward call, in order (nonfinite origin)
        self.logged: dict[str, float | torch.Tensor] = {}
        self.wall_time = 0.0

    def add(self, layer: int, code: str, value: torch.Tensor) -> None:
        self.keys.append((layer, code))
        self.values.append(value)


def transfer(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Move tensors to the host as float64 arrays (0-d stay 0-d), one copy per device.

    0-d tensors are stacked (one op) and the rest flattened and concatenated after them, so a
    step's few hundred partial results cost a single device-to-host copy.
    """
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for i, t in enumerate(tensors):
        by_device[t.device].append(i)
    out: list[np.ndarray] = [None] * len(tensors)  # type: ignore[list-item]
    for idx in by_device.values():
        scalars = [i for i in idx if tensors[i].ndim == 0]
        others = [i for i in idx if tensors[i].ndim != 0]
        parts = [torch.stack([tensors[i] for i in scalars])] if scalars else []
        parts += [tensors[i].reshape(-1) for i in others]
        flat = (torch.cat(parts) if len(parts) > 1 else parts[0]).detach().to("cpu", torch.float64).numpy()
        for j, i in enumerate(scalars):
            out[i] = flat[j]
        offset = len(scalars)
        for i in others:
            n = tensors[i].numel()
            out[i] = flat[offset:offset + n].reshape(tensors[i].shape)
            offset += n
    return out


def aggregate(keys: list[Key], host: list[np.ndarray]) -> dict[Key, Any]:
    """Combine partial values per (layer, code) as the code's `Combine` rule says (probes/partials.py):
    sums, sums of squares of norms, elementwise max, the first value, or a list per call (moments)."""
    out: dict[Key, np.ndarray | float] = {}
    for key, value in zip(keys, host):
        rule = COMBINE[key[1]]
        if rule is Combine.PER_CALL:
            out.setdefault(key, []).append(value)
        elif rule is Combine.SQUARES_INTO:
            key = (key[0], SQUARED[key[1]])
            out[key] = out.get(key, 0.0) + value
        elif key not in out:
            out[key] = value * value if rule is Combine.NORM_SQUARES else value
        elif rule is Combine.NORM_SQUARES:
            out[key] = out[key] + value * value  # per-parameter norms -> layer sum of squares
        elif rule is Combine.UNIT_MAX:  # any nonzero value in any call: the unit fired
            prev = out[key]
            out[key] = np.maximum(prev, value) if prev.shape == value.shape else prev  # NaN stays NaN
        elif rule is Combine.FIRST:
            continue  # first call of the step only
        elif rule is Combine.MAX:
            out[key] = np.maximum(out[key], value)  # NaN propagates
        else:
            out[key] = out[key] + value
    return out
