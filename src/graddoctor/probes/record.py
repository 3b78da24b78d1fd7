"""StepRecord: what one recorded step measured, kept on the device until the step closes.

Hooks append 0-d or 1-d tensors with a key (layer index, code). `transfer` moves all of them to
the host in one copy per device; `aggregate` combines partial results (several calls of a module,
several micro-batches) in float64 on the host.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch

# Codes of partial results. Kept per call: S (the shift k, the output's first element), SD, SS (sum
# and sum of squares of the output minus k), combined by derive.moments. Summed over calls: NZ (nonzero count),
# SAT (saturated count), OG (sum of squares of dL/d output). Per parameter: GN, WN, UN (norms of
# gradient, weight, update), or GSQ, WSQ, USQ: their sums of squares (GSQ: a layer's gradient
# sum of squares already combined across ranks, probes/distributed.py). UE: a parameter's estimated
# ||Δw||^2 from a fixed sample of its elements (update_ratio_est; summed per layer). Vectors: UNIT
# (per-unit max |y|, max over calls), HIST_*.
S, SD, SS, NZ, SAT, OG, GN, WN, UN, GSQ, WSQ, USQ, UNIT, HIST_ACT, HIST_GRAD = (
    "s", "sd", "ss", "nz", "sat", "og", "gn", "wn", "un", "gsq", "wsq", "usq", "unit", "hist_act", "hist_grad",
)
# Transformers (docs/transformers.md): OGS (sum of dL/d output: finite iff its values are, so an
# infinite OG of finite values is an overflow), GPRE (per-parameter gradient norm read when the
# gradient is complete, before any clipping), logits LSE/LROWS/LMAX (sum of log Z over rows, rows,
# max |logit|), attention AMAX (max logit), AENT/AROWS (per-head entropy sums and query rows).
OGS, GPRE, LSE, LROWS, LMAX, AMAX, AENT, AROWS = "ogs", "gpre", "lse", "lrows", "lmax", "amax", "aent", "arows"
UE = "ue"
MAXED = (LMAX, AMAX)  # combined by max over calls and micro-batches
SQUARED = {GSQ: GN, WSQ: WN, USQ: UN}  # sums of squares, added into the norm codes' layer sums of squares
PER_CALL = (S, SD, SS)
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
    """Combine partial values per (layer, code): sums, sums of squares, elementwise max, or a
    list per call (moments)."""
    out: dict[Key, np.ndarray | float] = {}
    for key, value in zip(keys, host):
        code = key[1]
        if code in PER_CALL:
            out.setdefault(key, []).append(value)
        elif code in SQUARED:
            key = (key[0], SQUARED[code])
            out[key] = out.get(key, 0.0) + value
        elif key not in out:
            out[key] = value * value if code in (GN, WN, UN, GPRE) else value
        elif code in (GN, WN, UN, GPRE):
            out[key] = out[key] + value * value  # per-parameter norms -> layer sum of squares
        elif code == UNIT:  # any nonzero value in any call: the unit fired
            prev = out[key]
            out[key] = np.maximum(prev, value) if prev.shape == value.shape else prev  # NaN stays NaN
        elif code in (HIST_ACT, HIST_GRAD):
            continue  # first call of the step only
        elif code in MAXED:
            out[key] = np.maximum(out[key], value)  # NaN propagates
        else:
            out[key] = out[key] + value
    return out
