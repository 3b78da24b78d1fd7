"""From partial sums to statistics: every formula of the README's Statistics table, in one place.

Pure host-side code over float64 numbers: testable without a model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import Stat
from .record import GN, HIST_ACT, HIST_GRAD, NZ, OG, S, SAT, SD, SS, UN, UNIT, WN, Key
from .select import LayerPlan


def derive(
    plan: list[LayerPlan],
    values: dict[Key, Any],
    numel: dict[int, list[int]],
    nonfinite: dict[int, float],
    amp_scale: float | None,
) -> dict[tuple[int, Stat], float]:
    """Statistics per (layer index, Stat) for one recorded step."""
    out: dict[tuple[int, Stat], float] = {}
    for i, layer in enumerate(plan):
        if layer.params and (i, WN) in values:
            out.update(_param_stats(i, layer, values, nonfinite))
        if sum(numel.get(i, ())):
            out.update(_output_stats(i, layer, values, numel[i]))
        if (i, OG) in values:
            og = math.sqrt(values[(i, OG)])
            out[(i, Stat.OUT_GRAD_NORM)] = og / amp_scale if amp_scale else og
    return out


def _param_stats(i: int, layer: LayerPlan, values: dict[Key, Any], nonfinite: dict[int, float]) -> dict:
    grad_sq = float(values.get((i, GN), 0.0))  # no gradient at all (None): the gradient is zero
    weight_norm = math.sqrt(values[(i, WN)])
    out = {
        (i, Stat.GRAD_NORM): math.sqrt(grad_sq),
        (i, Stat.GRAD_RMS): math.sqrt(grad_sq / layer.n_params),
        (i, Stat.WEIGHT_NORM): weight_norm,
        (i, Stat.NONFINITE_FRAC): nonfinite.get(i, 0.0) / layer.n_params,
    }
    if (i, UN) in values and weight_norm:  # undefined for all-zero weights (a zero-initialised head)
        out[(i, Stat.UPDATE_RATIO)] = math.sqrt(values[(i, UN)]) / weight_norm
    return out


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
