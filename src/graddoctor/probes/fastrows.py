"""One recorded step's statistics as a numpy [stat, position] block: `aggregate` and `derive` at once.

The same formulas as record.aggregate and derive.derive (the readable reference, which the tests
hold this to), computed per code over arrays of partial results instead of per value. What depends
only on the keys (which partial belongs to which code and layer, the calls' order) is worked out
once, in a `Layout`, and kept while steps bring the same keys (they do, step after step, for one
model and tier); per step, the numbers become one float64 array and every statistic is a few numpy
operations over all layers. Only vectors (per-unit maxima for dead_frac) that do not stack are
handled per layer.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from ..config import Stat
from ..store.segments import StepStats
from .derive import transformer_stats
from .partials import PARTIALS, SQUARES_OF
from .record import (
    AENT, AMAX, AROWS, GN, GPRE, GSQ, HIST_ACT, HIST_GRAD, LMAX, LROWS, LSE, NZ, OG, SAT, SD, SS, UE, UN, UNIT, USQ,
    WN, WSQ, S, Key, aggregate,
)
from .select import LayerPlan

NAMES = tuple(sorted(s.value for s in Stat))
ROW = {name: k for k, name in enumerate(NAMES)}
_SQUARED_INTO = SQUARES_OF  # GN -> GSQ, ...: sums of squares folded into a norm code's (probes/partials.py)
# The codes this block computes: every code of the table (OGS only tells an overflowed norm from NaN/Inf
# values, which the caller sends to the reference path); any other code would go there too.
_TRANSFORMER = (LSE, LROWS, LMAX, AMAX, AENT, AROWS)  # a few layers at most: derive's own formulas, per layer
KNOWN_CODES = frozenset(PARTIALS)
VECTORS = (UNIT, HIST_ACT, HIST_GRAD)  # codes whose partial results are vectors; every other one but attention's is a number
_NOT_NUMBERS = frozenset({*VECTORS, *_TRANSFORMER})
_NO_LAYERS = np.zeros(0, dtype=np.int64)


class Layers:
    """What the block needs of the plan, as arrays (built once per run)."""

    def __init__(self, plan: list[LayerPlan]) -> None:
        self.n = len(plan)
        self.n_params = np.array([max(layer.n_params, 1) for layer in plan], dtype=np.float64)
        self.has_params = np.array([bool(layer.params) for layer in plan])


class Layout:
    """Where a step's partial results sit, from its keys alone: per code, the layers of its partials
    and their span in the step's array of numbers (codes in the order they first come, each one's
    partials in key order: the order the reference path sums them in)."""

    def __init__(self, keys: list[Key]) -> None:
        by_code: dict[str, list[int]] = defaultdict(list)
        for j, key in enumerate(keys):
            by_code[key[1]].append(j)
        self.keys = list(keys)
        self.by_code = dict(by_code)
        self.layer_of = np.fromiter((k[0] for k in keys), dtype=np.int64, count=len(keys))
        self.at = {code: self.layer_of[idx] for code, idx in by_code.items()}
        numbers: list[int] = []
        self.span: dict[str, slice] = {}
        for code, idx in by_code.items():
            if code not in _NOT_NUMBERS:
                self.span[code] = slice(len(numbers), len(numbers) + len(idx))
                numbers += idx
        self.n_numbers = len(numbers)
        self._numbers: Callable[[list], Any] = (
            (lambda values: ()) if not numbers else
            operator.itemgetter(*numbers) if len(numbers) > 1 else (lambda values, j=numbers[0]: (values[j],)))
        at, at_d, at_q = (self.at.get(code, _NO_LAYERS) for code in (S, SD, SS))
        self.moments_line_up = bool(np.array_equal(at, at_d) and np.array_equal(at, at_q))
        # the j-th partial of a layer belongs to its j-th call: the partials sorted by layer (stably)
        self.call_order = np.argsort(at, kind="stable")
        self.call_layer = at[self.call_order]
        self.units = by_code.get(UNIT, [])
        self.one_unit_per_layer = len(np.unique(self.at.get(UNIT, _NO_LAYERS))) == len(self.units)
        self.transformer = [j for code in _TRANSFORMER for j in by_code.get(code, ())]
        self.transformer_layers = sorted({int(self.layer_of[j]) for j in self.transformer})
        self._calls: tuple[dict, int, tuple] | None = None  # the last step's output calls, worked out (see calls())
        self._present: dict[tuple[str, int], np.ndarray] = {}

    def has(self, *codes: str) -> bool:
        """Whether the step has partial results of any of these codes."""
        return any(code in self.by_code for code in codes)

    def numbers(self, values: list[Any]) -> np.ndarray | None:
        """The step's numbers (every code but the vectors and attention's), float64, in `span` order;
        None where one of them is not a number."""
        try:
            return np.fromiter(self._numbers(values), dtype=np.float64, count=self.n_numbers)
        except (TypeError, ValueError):
            return None

    def present(self, code: str, n: int) -> np.ndarray:
        """Whether each of the n layers has a partial result of `code`."""
        key = (code, n)
        if key not in self._present:
            present = np.bincount(self.at.get(code, _NO_LAYERS), minlength=n)[:n] > 0
            present.setflags(write=False)  # shared by every step of this layout
            self._present[key] = present
        return self._present[key]

    def calls(self, numel: dict[int, list[int]], n: int) -> tuple | None:
        """(elements per layer, elements per call in `call_order`) of the step's outputs, or None where
        the moments' partials do not line up with the calls. Kept while steps bring the same calls."""
        if self._calls is not None and self._calls[1] == n and self._calls[0] == numel:
            return self._calls[2]
        count = np.zeros(n)
        for i, counts in numel.items():
            if i < n:
                count[i] = sum(counts)
        per_layer = np.bincount(self.call_layer, minlength=n)[:n]
        with_calls = np.flatnonzero((count > 0) | (per_layer > 0))
        calls = np.fromiter((len(numel.get(int(i), ())) for i in with_calls), dtype=np.int64, count=len(with_calls))
        if not self.moments_line_up or (per_layer[with_calls] != calls).any():
            result = None
        else:
            n_c = np.fromiter((c for i in with_calls for c in numel[i]), dtype=np.float64, count=int(per_layer.sum()))
            count.setflags(write=False)  # shared by every step with these calls
            n_c.setflags(write=False)
            result = (count, n_c)
        self._calls = ({i: list(c) for i, c in numel.items()}, n, result)
        return result

    def units_matrix(self, values: list[Any]) -> np.ndarray | None:
        """The step's per-unit maxima as the rows of a [layer with units, unit] matrix (rows in the order
        of `at[UNIT]`), or None unless there is one vector per layer, all 1-d of one length."""
        if not self.units or not self.one_unit_per_layer:
            return None
        try:
            f = np.array([values[j] for j in self.units], dtype=np.float64)
        except ValueError:  # vectors of different lengths
            return None
        return f if f.ndim == 2 else None

    def all_finite(self, flat: np.ndarray, units: np.ndarray | None, values: list[Any]) -> bool:
        """Every partial result of the step is finite (`flat`: its numbers, `units`: units_matrix)."""
        if not np.isfinite(flat).all() or (units is not None and not np.isfinite(units).all()):
            return False
        vectors = [values[j] for code in VECTORS for j in self.by_code.get(code, ()) if code != UNIT or units is None]
        vectors += [values[j] for j in self.transformer]
        return not vectors or bool(np.isfinite(np.concatenate([np.ravel(v) for v in vectors])).all())


def group(keys: list[Key]) -> Layout:
    """The Layout of a step's keys: one pass over them."""
    return Layout(keys)


def step_block(
    layers: Layers,
    layout: Layout,
    values: list[Any],
    numel: dict[int, list[int]],
    nonfinite: dict[int, float],
    amp_scale: float | None,
    step: int,
    position: np.ndarray,
    n_positions: int,
    *,
    finite_only: bool = False,
) -> StepStats | None:
    """The step's StepStats (positions from `position[layer index]`, -1: none), or None where the
    partial results do not line up with the calls, or (`finite_only`) where one is NaN or infinite:
    then the caller uses the reference path."""
    n = layers.n
    flat = layout.numbers(values)
    calls = layout.calls(numel, n)
    if flat is None or calls is None:
        return None
    units = layout.units_matrix(values)
    if finite_only and not layout.all_finite(flat, units, values):
        return None

    def gather(code: str) -> tuple[np.ndarray, np.ndarray]:
        span = layout.span.get(code)
        return (layout.at[code], flat[span]) if span is not None else (_NO_LAYERS, flat[:0])

    def total(code: str, square: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer sums (of squares) and whether the code was present, `SQUARED` codes folded in."""
        at, v = gather(code)
        sums = np.bincount(at, weights=v * v if square else v, minlength=n)[:n]
        present = layout.present(code, n)
        if code in _SQUARED_INTO:
            at2, v2 = gather(_SQUARED_INTO[code])
            sums = sums + np.bincount(at2, weights=v2, minlength=n)[:n]
            present = present | layout.present(_SQUARED_INTO[code], n)
        return sums, present

    out = np.full((len(NAMES), n), np.nan)
    rec = np.zeros((len(NAMES), n), dtype=bool)

    def put(stat: Stat, where: np.ndarray, value: np.ndarray) -> None:
        k = ROW[stat.value]  # each statistic is put once: whole rows, no masked assignment
        out[k] = np.where(where, value, np.nan)
        rec[k] = where

    has = layout.has  # statistics whose partials the step lacks are left out, not computed over nothing
    with np.errstate(divide="ignore", invalid="ignore"):
        if has(GN, GSQ, WN, WSQ):  # parameters: derive._param_stats
            gsq, has_g = total(GN, square=True)
            wsq, has_w = total(WN, square=True)
            param = (has_w | has_g) & layers.has_params  # GN without WN: a cheap-tier step (no weight norm)
            bad = np.zeros(n)
            for i, count in nonfinite.items():
                if i < n:
                    bad[i] = count
            put(Stat.GRAD_NORM, param, np.sqrt(gsq))
            put(Stat.GRAD_RMS, param, np.sqrt(gsq / layers.n_params))
            put(Stat.NONFINITE_FRAC, param, bad / layers.n_params)
            if has(WN, WSQ):
                weight_norm = np.sqrt(wsq)
                put(Stat.WEIGHT_NORM, param & has_w, weight_norm)
                if has(UN, USQ):
                    usq, has_u = total(UN, square=True)
                    put(Stat.UPDATE_RATIO, param & has_w & has_u & (weight_norm != 0), np.sqrt(usq) / weight_norm)
                if has(UE):  # update_ratio_est: estimated ||Δw||^2 per parameter, summed per layer
                    use, has_ue = total(UE)
                    put(Stat.UPDATE_RATIO_EST, param & has_w & has_ue & (weight_norm != 0), np.sqrt(use) / weight_norm)
            if has(GPRE):
                pre, has_pre = total(GPRE, square=True)  # per-parameter norms when complete, before clipping
                pre = np.sqrt(pre)
                put(Stat.GRAD_NORM_PRE_CLIP, param & has_pre, pre / amp_scale if amp_scale else pre)
        if calls[0].any():  # outputs: derive._output_stats
            _output_stats(put, n, layout, values, calls, units, total, gather)
        if has(OG):
            og, has_og = total(OG)
            og = np.sqrt(og)
            put(Stat.OUT_GRAD_NORM, has_og, og / amp_scale if amp_scale else og)
        if layout.transformer:
            sub = aggregate([layout.keys[j] for j in layout.transformer], [values[j] for j in layout.transformer])
            for i in layout.transformer_layers:
                for (_, stat), v in transformer_stats(i, sub).items():  # one layer at a time: not put()
                    out[ROW[stat.value], i], rec[ROW[stat.value], i] = v, True
    return _at_positions(step, out, rec, position[:n], n_positions)


def _at_positions(step: int, out: np.ndarray, rec: np.ndarray, position: np.ndarray, n_positions: int) -> StepStats:
    """The [stat, layer] block as the stored [stat, position] block, the statistics no layer has left out."""
    n = len(position)
    if n_positions != n or not np.array_equal(position, np.arange(n)):  # else: positions are layer indices
        keep = position >= 0
        cols = position[keep]
        values_out = np.full((len(NAMES), n_positions), np.nan)
        rec_out = np.zeros((len(NAMES), n_positions), dtype=bool)
        values_out[:, cols], rec_out[:, cols] = out[:, keep], rec[:, keep]
        out, rec = values_out, rec_out
    used = rec.any(axis=1)
    return StepStats(step, tuple(name for name, u in zip(NAMES, used) if u), out[used], rec[used])


def _output_stats(put, n, layout: Layout, values, calls, f, total, gather) -> None:
    """act_mean/std (derive.moments over calls), zero, saturated and dead fractions."""
    count, n_c = calls
    has_out = count > 0
    order, at = layout.call_order, layout.call_layer
    shift, shifted, squares = (gather(code)[1][order] for code in (S, SD, SS))
    live = n_c > 0
    means = np.where(live, shift + shifted / np.where(live, n_c, 1), 0.0)
    mean = np.bincount(at, weights=n_c * means, minlength=n)[:n] / count
    m2_c = np.maximum(squares - shifted ** 2 / np.where(live, n_c, 1), 0.0) + n_c * (means - mean[at]) ** 2
    m2 = np.bincount(at[live], weights=m2_c[live], minlength=n)[:n]
    put(Stat.ACT_MEAN, has_out, mean)
    put(Stat.ACT_STD, has_out, np.sqrt(m2 / count))
    if layout.has(NZ):
        nz, has_nz = total(NZ)
        put(Stat.ACT_ZERO_FRAC, has_out & has_nz, 1.0 - nz / count)
    if layout.has(SAT):
        sat, has_sat = total(SAT)
        put(Stat.SATURATED_FRAC, has_out & has_sat, sat / count)
    if not layout.units:
        return
    dead = np.full(n, np.nan)
    has_fired = np.zeros(n, dtype=bool)
    if f is not None:  # one vector per layer, all of one length (the usual case): one count over a matrix
        at_u = layout.at[UNIT]
        dead[at_u] = np.count_nonzero(f == 0.0, axis=1) / f.shape[1] if f.shape[1] else np.nan
        has_fired[at_u] = True
    else:
        fired: dict[int, np.ndarray] = {}
        for j in layout.units:
            i, value = int(layout.layer_of[j]), values[j]
            prev = fired.get(i)
            fired[i] = value if prev is None else (np.maximum(prev, value) if prev.shape == value.shape else prev)
        for i, fi in fired.items():
            dead[i], has_fired[i] = np.count_nonzero(fi == 0.0) / fi.size if fi.size else np.nan, True
    put(Stat.DEAD_FRAC, has_out & has_fired, dead)

