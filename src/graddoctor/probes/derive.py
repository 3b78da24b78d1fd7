"""From partial sums to statistics: every formula of docs/statistics.md's table, in one place.

Pure host-side code over float64 numbers: testable without a model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import Stat
from .record import (
    AENT, AMAX, AROWS, GN, GPRE, HIST_ACT, HIST_GRAD, LMAX, LROWS, LSE, NZ, OG, OGS, S, SAT, SD, SS, UE, UN, UNIT, WN, Key,
)
from .select import LayerPlan

FLOAT32_MAX = 3.4028234663852886e38  # a float32 sum of squares above this overflows to inf


def derive(
    plan: list[LayerPlan],
    values: dict[Key, Any],
    numel: dict[int, list[int]],
    nonfinite: dict[int, float],
    amp_scale: float | None,
    exact_grad_sq: dict[int, float] | None = None,
    exact_weight_sq: dict[int, float] | None = None,
) -> dict[tuple[int, Stat], float]:
    """Statistics per (layer index, Stat) for one recorded step."""
    out: dict[tuple[int, Stat], float] = {}
    for i, layer in enumerate(plan):
        if layer.params and ((i, WN) in values or (i, GN) in values):  # GN alone: a cheap-tier step
            out.update(_param_stats(i, layer, values, nonfinite, exact_grad_sq or {}, exact_weight_sq or {}))
            if (i, GPRE) in values:  # read before GradScaler's unscale_: divided by the scale here
                pre = math.sqrt(values[(i, GPRE)])
                if pre == math.inf and not nonfinite.get(i) and math.isfinite(out[(i, Stat.GRAD_NORM)]):
                    pre = math.sqrt(FLOAT32_MAX)  # finite now, so finite before clipping: float32 overflowed (a floor)
                    out[(i, Stat.NORM_OVERFLOW)] = 1.0
                out[(i, Stat.GRAD_NORM_PRE_CLIP)] = pre / amp_scale if amp_scale else pre
        if sum(numel.get(i, ())):
            out.update(_output_stats(i, layer, values, numel[i]))
        if (i, OG) in values:
            og = math.sqrt(values[(i, OG)])
            if og == math.inf and math.isfinite(values.get((i, OGS), math.nan)):  # finite values, float32 overflowed
                og = math.sqrt(FLOAT32_MAX)  # a floor, flagged
                out[(i, Stat.NORM_OVERFLOW)] = 1.0
            out[(i, Stat.OUT_GRAD_NORM)] = og / amp_scale if amp_scale else og
        out.update(transformer_stats(i, values))
    return out


def transformer_stats(i: int, values: dict[Key, Any]) -> dict[tuple[int, Stat], float]:
    """Output-logit and attention statistics of layer i (docs/transformers.md)."""
    out = {}
    if (i, LSE) in values and values.get((i, LROWS)):
        out[(i, Stat.LOGIT_LSE)] = float(values[(i, LSE)]) / float(values[(i, LROWS)])
        out[(i, Stat.LOGIT_MAX)] = float(values[(i, LMAX)])
    if (i, AMAX) in values:
        out[(i, Stat.ATTN_LOGIT_MAX)] = float(values[(i, AMAX)])
        ent, rows = np.asarray(values[(i, AENT)], dtype=float), np.asarray(values[(i, AROWS)], dtype=float)
        if rows.sum() > 0:
            out[(i, Stat.ATTN_ENTROPY)] = float(ent.sum() / rows.sum())
            per_head = ent[rows > 0] / rows[rows > 0]
            out[(i, Stat.ATTN_ENTROPY_MIN_HEAD)] = float(per_head.min())
    return out


def _param_stats(i: int, layer: LayerPlan, values: dict[Key, Any], nonfinite: dict[int, float],
                 exact_grad_sq: dict[int, float], exact_weight_sq: dict[int, float]) -> dict:
    grad_sq = float(values.get((i, GN), 0.0))  # no gradient at all (None): the gradient is zero
    overflow = {}
    if not math.isfinite(grad_sq) and not nonfinite.get(i) and math.isfinite(exact_grad_sq.get(i, math.nan)):
        grad_sq = exact_grad_sq[i]  # finite values whose float32 norm overflowed: the float64 recount
        overflow = {(i, Stat.NORM_OVERFLOW): 1.0}
    out = {
        (i, Stat.GRAD_NORM): math.sqrt(grad_sq),
        (i, Stat.GRAD_RMS): math.sqrt(grad_sq / layer.n_params),
        (i, Stat.NONFINITE_FRAC): nonfinite.get(i, 0.0) / layer.n_params,
    }
    if (i, WN) not in values:  # a cheap-tier step: no weight norm, no update
        return {**out, **overflow}
    weight_sq = float(values[(i, WN)])
    if not math.isfinite(weight_sq) and math.isfinite(exact_weight_sq.get(i, math.nan)):
        weight_sq = exact_weight_sq[i]
        overflow = {(i, Stat.NORM_OVERFLOW): 1.0}
    weight_norm = math.sqrt(weight_sq)
    out[(i, Stat.WEIGHT_NORM)] = weight_norm
    if (i, UN) in values and weight_norm:  # undefined for all-zero weights (a zero-initialised head)
        out[(i, Stat.UPDATE_RATIO)] = math.sqrt(values[(i, UN)]) / weight_norm
    if (i, UE) in values and weight_norm:  # estimated from a fixed sample of each parameter's elements
        out[(i, Stat.UPDATE_RATIO_EST)] = math.sqrt(values[(i, UE)]) / weight_norm
    return {**out, **overflow}


def moments(n: list[int], shift: list[float], shifted: list[float], squares: list[float]) -> tuple[float, float]:
    """Mean and population variance over several calls from per-call (n, k, sum(d), sum(d**2)).

    Per call d = y - k: mean_c = k + sum(d)/n and M2_c = sum(d**2) - sum(d)**2/n, exact for the
    shifted values; calls are combined with Chan et al.'s parallel formula
    M2 = sum M2_c + sum n_c (mean_c - mean)**2.
    """
    count = float(sum(n))
    means = [float(k) + float(d) / n_c if n_c else 0.0 for n_c, k, d in zip(n, shift, shifted)]
    mean = sum(n_c * m for n_c, m in zip(n, means)) / count
    m2 = 0.0
    for n_c, m_c, d_c, q_c in zip(n, means, shifted, squares):
        if n_c:
            m2 += max(float(q_c) - float(d_c) ** 2 / n_c, 0.0) + n_c * (m_c - mean) ** 2
    return mean, m2 / count


def _output_stats(i: int, layer: LayerPlan, values: dict[Key, Any], calls: list[int]) -> dict:
    mean, var = moments(calls, values[(i, S)], values[(i, SD)], values[(i, SS)])
    n = sum(calls)
    out = {(i, Stat.ACT_MEAN): mean, (i, Stat.ACT_STD): math.sqrt(var) if var == var else math.nan}
    if not math.isfinite(var) and all(math.isfinite(float(d)) for d in values[(i, SD)]):
        out[(i, Stat.ACT_STD)] = math.sqrt(FLOAT32_MAX / n)  # finite outputs, float32 squares overflowed: a floor
        out[(i, Stat.NORM_OVERFLOW)] = 1.0
    if (i, NZ) in values:
        out[(i, Stat.ACT_ZERO_FRAC)] = 1.0 - float(values[(i, NZ)]) / n
    if (i, UNIT) in values:
        fired = values[(i, UNIT)]  # per unit: max |y| over samples, positions and calls
        out[(i, Stat.DEAD_FRAC)] = float(np.mean(fired == 0.0))
    if (i, SAT) in values:
        out[(i, Stat.SATURATED_FRAC)] = float(values[(i, SAT)]) / n
    return out


def histograms(values: dict[Key, Any]) -> list[tuple[int, str, float, float, int, list[float]]]:
    """(layer index, 'act'|'grad', lo, hi, nonfinite, counts) for every histogram of the step."""
    out = []
    for (i, code), vec in values.items():
        if code in (HIST_ACT, HIST_GRAD):
            kind = "act" if code == HIST_ACT else "grad"
            out.append((i, kind, float(vec[0]), float(vec[1]), int(vec[2]), [float(c) for c in vec[3:]]))
    return out
