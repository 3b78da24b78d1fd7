"""One recorded step's statistics as a numpy [stat, position] block: `aggregate` and `derive` at once.

The same formulas as record.aggregate and derive.derive (the readable reference, which the tests
hold this to), computed per code over arrays of partial results instead of per value: one pass
over the keys groups them by code, then every statistic is a few numpy operations over all layers.
Only vectors (per-unit maxima for dead_frac) are handled per layer.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ..config import Stat
from ..store.segments import StepStats
from .derive import transformer_stats
from .record import (
    AENT, AMAX, AROWS, GN, GPRE, GSQ, HIST_ACT, HIST_GRAD, LMAX, LROWS, LSE, NZ, OG, OGS, SAT, SD, SS, UN, UNIT, USQ,
    WN, WSQ, S, Key, aggregate,
)
from .select import LayerPlan

NAMES = tuple(sorted(s.value for s in Stat))
ROW = {name: k for k, name in enumerate(NAMES)}
_SQUARED_INTO = {GN: GSQ, WN: WSQ, UN: USQ}
# The codes this block computes (OGS only tells an overflowed norm from NaN/Inf values, which the
# caller sends to the reference path); any other code (pre-clip norms, logits, attention) goes there too.
_TRANSFORMER = (LSE, LROWS, LMAX, AMAX, AENT, AROWS)  # a few layers at most: derive's own formulas, per layer
KNOWN_CODES = frozenset({S, SD, SS, NZ, SAT, OG, OGS, GN, GPRE, WN, UN, GSQ, WSQ, USQ, UNIT, HIST_ACT, HIST_GRAD,
                         *_TRANSFORMER})


class Layers:
    """What the block needs of the plan, as arrays (built once per run)."""

    def __init__(self, plan: list[LayerPlan]) -> None:
        self.n = len(plan)
        self.n_params = np.array([max(layer.n_params, 1) for layer in plan], dtype=np.float64)
        self.has_params = np.array([bool(layer.params) for layer in plan])


def group(keys: list[Key]) -> tuple[dict[str, list[int]], np.ndarray]:
    """Indices of the partial results per code, and each one's layer index: one pass over the keys."""
    by_code: dict[str, list[int]] = defaultdict(list)
    for j, key in enumerate(keys):
        by_code[key[1]].append(j)
    return by_code, np.fromiter((k[0] for k in keys), dtype=np.int64, count=len(keys))


def step_block(
    layers: Layers,
    grouped: tuple[dict[str, list[int]], np.ndarray],
    values: list[Any],
    numel: dict[int, list[int]],
    nonfinite: dict[int, float],
    amp_scale: float | None,
    step: int,
    position: np.ndarray,
    n_positions: int,
) -> StepStats | None:
    """The step's StepStats (positions from `position[layer index]`, -1: none), or None where the
    partial results do not line up with the calls (then the caller uses the reference path)."""
    by_code, layer_of = grouped
    n = layers.n

    def gather(code: str) -> tuple[np.ndarray, np.ndarray]:
        idx = by_code.get(code, [])
        return layer_of[idx] if idx else np.zeros(0, dtype=np.int64), np.fromiter(
            (values[j] for j in idx), dtype=np.float64, count=len(idx))

    def total(code: str, square: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer sums (of squares) and whether the code was present, `SQUARED` codes folded in."""
        at, v = gather(code)
        sums = np.bincount(at, weights=v * v if square else v, minlength=n)[:n]
        present = np.bincount(at, minlength=n)[:n] > 0
        if code in _SQUARED_INTO:
            at2, v2 = gather(_SQUARED_INTO[code])
            sums = sums + np.bincount(at2, weights=v2, minlength=n)[:n]
            present |= np.bincount(at2, minlength=n)[:n] > 0
        return sums, present

    out = np.full((len(NAMES), n), np.nan)
    rec = np.zeros((len(NAMES), n), dtype=bool)

    def put(stat: Stat, where: np.ndarray, value: np.ndarray) -> None:
        k = ROW[stat.value]
        out[k, where] = value[where] if np.ndim(value) else value
        rec[k, where] = True

    with np.errstate(divide="ignore", invalid="ignore"):
        # parameters: derive._param_stats
        gsq, has_g = total(GN, square=True)
        wsq, has_w = total(WN, square=True)
        usq, has_u = total(UN, square=True)
        param = (has_w | has_g) & layers.has_params  # GN without WN: a cheap-tier step (no weight norm)
        weight_norm = np.sqrt(wsq)
        bad = np.zeros(n)
        for i, count in nonfinite.items():
            if i < n:
                bad[i] = count
        put(Stat.GRAD_NORM, param, np.sqrt(gsq))
        put(Stat.GRAD_RMS, param, np.sqrt(gsq / layers.n_params))
        put(Stat.WEIGHT_NORM, param & has_w, weight_norm)
        put(Stat.NONFINITE_FRAC, param, bad / layers.n_params)
        put(Stat.UPDATE_RATIO, param & has_w & has_u & (weight_norm != 0), np.sqrt(usq) / weight_norm)
        # outputs: derive._output_stats
        if not _output_stats(put, n, by_code, layer_of, values, numel, total, gather):
            return None
        og, has_og = total(OG)
        og = np.sqrt(og)
        put(Stat.OUT_GRAD_NORM, has_og, og / amp_scale if amp_scale else og)
        pre, has_pre = total(GPRE, square=True)  # per-parameter norms when complete, before clipping
        pre = np.sqrt(pre)
        put(Stat.GRAD_NORM_PRE_CLIP, param & has_pre, pre / amp_scale if amp_scale else pre)
        idx = [j for code in _TRANSFORMER for j in by_code.get(code, ())]
        if idx:
            sub = aggregate([(int(layer_of[j]), keys_code) for code in _TRANSFORMER
                             for j, keys_code in ((j, code) for j in by_code.get(code, ()))],
                            [values[j] for code in _TRANSFORMER for j in by_code.get(code, ())])
            for i in sorted({int(layer_of[j]) for j in idx}):
                for (_, stat), v in transformer_stats(i, sub).items():
                    where = np.zeros(n, dtype=bool)
                    where[i] = True
                    put(stat, where, np.float64(v))
    keep = position[:n] >= 0
    cols = position[:n][keep]
    values_out = np.full((len(NAMES), n_positions), np.nan)
    rec_out = np.zeros((len(NAMES), n_positions), dtype=bool)
    values_out[:, cols], rec_out[:, cols] = out[:, keep], rec[:, keep]
    used = rec_out.any(axis=1)
    return StepStats(step, tuple(name for name, u in zip(NAMES, used) if u), values_out[used], rec_out[used])


def _output_stats(put, n, by_code, layer_of, values, numel, total, gather) -> bool:
    """act_mean/std (derive.moments over calls), zero, saturated and dead fractions."""
    count = np.zeros(n)
    for i, counts in numel.items():
        if i < n:
            count[i] = sum(counts)
    has_out = count > 0
    at, shift = gather(S)
    at_d, shifted = gather(SD)
    at_q, squares = gather(SS)
    if not (np.array_equal(at, at_d) and np.array_equal(at, at_q)):
        return False
    # the j-th partial of a layer belongs to its j-th call: sort the partials by layer (stably)
    order = np.argsort(at, kind="stable")
    at, shift, shifted, squares = at[order], shift[order], shifted[order], squares[order]
    per_layer = np.bincount(at, minlength=n)[:n]
    with_calls = np.flatnonzero(has_out | (per_layer > 0))
    calls = np.fromiter((len(numel.get(int(i), ())) for i in with_calls), dtype=np.int64, count=len(with_calls))
    if (per_layer[with_calls] != calls).any():
        return False
    n_c = np.fromiter((c for i in with_calls for c in numel[i]), dtype=np.float64, count=int(per_layer.sum()))
    live = n_c > 0
    means = np.where(live, shift + shifted / np.where(live, n_c, 1), 0.0)
    mean = np.bincount(at, weights=n_c * means, minlength=n)[:n] / count
    m2_c = np.maximum(squares - shifted ** 2 / np.where(live, n_c, 1), 0.0) + n_c * (means - mean[at]) ** 2
    m2 = np.bincount(at[live], weights=m2_c[live], minlength=n)[:n]
    put(Stat.ACT_MEAN, has_out, mean)
    put(Stat.ACT_STD, has_out, np.sqrt(m2 / count))
    nz, has_nz = total(NZ)
    put(Stat.ACT_ZERO_FRAC, has_out & has_nz, 1.0 - nz / count)
    sat, has_sat = total(SAT)
    put(Stat.SATURATED_FRAC, has_out & has_sat, sat / count)
    dead = np.full(n, np.nan)
    has_fired = np.zeros(n, dtype=bool)
    units = by_code.get(UNIT, [])
    at_u = layer_of[units] if units else np.zeros(0, dtype=np.int64)
    shapes = {np.shape(values[j]) for j in units}
    if units and len(np.unique(at_u)) == len(units) and len(shapes) == 1 and len(next(iter(shapes))) == 1:
        # one vector per layer, all of one length (the usual case): one count over a stacked matrix
        f = np.stack([values[j] for j in units])
        dead[at_u] = np.count_nonzero(f == 0.0, axis=1) / f.shape[1] if f.shape[1] else np.nan
        has_fired[at_u] = True
    else:
        fired: dict[int, np.ndarray] = {}
        for j in units:
            i, value = int(layer_of[j]), values[j]
            prev = fired.get(i)
            fired[i] = value if prev is None else (np.maximum(prev, value) if prev.shape == value.shape else prev)
        for i, f in fired.items():
            dead[i], has_fired[i] = np.count_nonzero(f == 0.0) / f.size if f.size else np.nan, True
    put(Stat.DEAD_FRAC, has_out & has_fired, dead)
    return True
