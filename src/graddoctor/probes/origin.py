"""Where a NaN/Inf began within a step, pass by pass (docs/transformers.md, "Non-finite origin").

1. forward: the first module call, in call order, whose *output* had a non-finite value (the sum of
   its shifted output is finite iff every value is: an infinite sum of squares with a finite sum is
   float32 overflow of finite values, not a non-finite value);
2. else backward: the first module, in the order the backward reached them (output side first),
   whose *output gradient* had a non-finite value (same test on the gradient's sum);
3. else parameter gradient: the input-most layer whose parameter gradients held NaN/Inf (exact
   counts) while every output gradient was finite;
4. else weights (non-finite after an update), else the input-most non-finite statistic.
Pure host-side code over one step's aggregated values.
"""

from __future__ import annotations

import math
from typing import Any

from .record import OG, OGS, SD, Key


def _bad(value: Any) -> bool:
    return not math.isfinite(float(value))


def origin(
    keys: list[Key], values: dict[Key, Any], calls: list[int], fired: list[int], nonfinite: dict[int, float],
    derived_bad: list[tuple[int, str]],
) -> tuple[int, str, str] | None:
    """(layer index, stat, pass) of the step's first non-finite value, or None when all is finite.

    `values` from record.aggregate (SD: one entry per call, in call order); `keys` in the order the
    hooks added them (the backward order of OG); `derived_bad`: (layer, stat) of non-finite derived
    statistics, input-most first (the fallback).
    """
    seen: dict[int, int] = {}
    for i in calls or fired:  # the k-th call of layer i is its k-th SD entry
        k = seen.get(i, 0)
        seen[i] = k + 1
        sums = values.get((i, SD), [])
        if k < len(sums) and _bad(sums[k]):
            return i, "act_std", "forward"
    for i, code in keys:
        if code == OG and _bad(values.get((i, OGS), values[(i, OG)])):
            return i, "out_grad_norm", "backward"
    grads = [i for i, count in sorted(nonfinite.items()) if count > 0]
    if grads:
        return grads[0], "grad_norm", "gradient"
    weights = [(i, stat) for i, stat in derived_bad if stat == "weight_norm"]
    if weights:
        return weights[0][0], "weight_norm", "update"
    if derived_bad:
        return derived_bad[0][0], derived_bad[0][1], "statistic"
    return None
