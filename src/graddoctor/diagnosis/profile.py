"""Numbers the rules share: step windows, the depth profile of the gradient, the total gradient norm.

Pure functions of a `RunView` (numpy only). Non-finite values are left out of medians and fits;
the `nonfinite` rule is the one that reports them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import UPDATE_STATS, Stat
from ..store.view import RunView
from .families import depth_layers

TINY = 1e-30  # floor for logarithms: an exactly-zero gradient counts as 1e-30, not as -inf


@dataclasses.dataclass(frozen=True)
class Window:
    """Columns of the run's step arrays that a reading uses, and the optimizer steps they span."""

    label: str                   # "start" or "end"
    cols: np.ndarray

    def steps(self, run: RunView) -> tuple[int, int]:
        return int(run.steps[self.cols[0]]), int(run.steps[self.cols[-1]])


def finite_columns(run: RunView) -> np.ndarray:
    """Columns of steps whose recorded gradient statistics are all finite."""
    bad = np.zeros(len(run.steps), dtype=bool)
    for stat in (Stat.GRAD_NORM.value, Stat.OUT_GRAD_NORM.value):
        bad |= (run.recorded(stat, copy=False) & ~np.isfinite(run.stat_matrix(stat, copy=False))).any(axis=0)
    return np.flatnonzero(~bad)


def nonfinite_mask(run: RunView, stat: str, cols: slice | np.ndarray = slice(None)) -> np.ndarray:
    """[n_layers, n_steps] bool: a recorded value of `stat` is NaN or infinite (`cols`: those columns only).

    An infinite update_ratio of a layer whose weights are exactly zero (a zero-initialised head) is
    ||dw|| / 0 by definition, not a numerical failure: it is left out.
    """
    mask = run.recorded(stat, copy=False)[:, cols] & ~np.isfinite(run.stat_matrix(stat, copy=False)[:, cols])
    if stat in UPDATE_STATS and mask.any():
        mask &= run.stat_matrix(Stat.WEIGHT_NORM.value, copy=False)[:, cols] != 0
    return mask


def nonfinite_cells(run: RunView, col: int) -> list[tuple[int, str]]:
    """(layer index, stat) of every non-finite statistic recorded at column `col`."""
    return [(int(i), stat) for stat in run.stats for i in np.flatnonzero(nonfinite_mask(run, stat, [col])[:, 0])]


def nonfinite_columns(run: RunView) -> np.ndarray:
    """Columns holding a non-finite statistic, or an infinite logged loss.

    A NaN scalar is not counted: the view cannot tell it from a step where nothing was logged. A NaN
    loss that was back-propagated makes the gradient statistics NaN, which are counted.
    """
    bad = np.zeros(len(run.steps), dtype=bool)
    for stat in run.stats:
        bad |= nonfinite_mask(run, stat).any(axis=0)
    loss = loss_series(run)
    if loss is not None:
        bad |= np.isinf(loss)
    return np.flatnonzero(bad)


# Statistics of the full tier (config.WatchConfig): recorded on full-tier steps only, which may be
# one recorded step in 10. A rule reading one takes its windows over the steps that hold it
# (`windows(..., stat=)`), never over steps where it is missing.
FULL_TIER = frozenset({
    Stat.WEIGHT_NORM.value, Stat.UPDATE_RATIO.value, Stat.UPDATE_RATIO_EST.value, Stat.ACT_MEAN.value, Stat.ACT_STD.value,
    Stat.ACT_ZERO_FRAC.value, Stat.DEAD_FRAC.value, Stat.SATURATED_FRAC.value, Stat.GRAD_NORM_PRE_CLIP.value,
    Stat.LOGIT_LSE.value, Stat.LOGIT_MAX.value, Stat.ATTN_LOGIT_MAX.value, Stat.ATTN_ENTROPY.value,
    Stat.ATTN_ENTROPY_MIN_HEAD.value,
})


def estimated(stat: str) -> dict[str, bool]:
    """Evidence that a finding read update_ratio_est (a sampled estimate), not the exact update_ratio."""
    return {"update_ratio_stat": stat} if stat == Stat.UPDATE_RATIO_EST.value else {}


def windows(run: RunView, early: int, late: int, stat: str | None = None) -> tuple[Window, Window] | None:
    """The first `early` and the last `late` finite columns (None when no step is finite); with
    `stat`, only columns where it was recorded (a full-tier statistic: its own steps)."""
    cols = finite_columns(run)
    if stat is not None:
        cols = cols[run.recorded(stat).any(axis=0)[cols]]
    if cols.size == 0:
        return None
    return Window("start", cols[:early]), Window("end", cols[-late:])


def window_values(matrix: np.ndarray, cols: np.ndarray, how: str = "median") -> np.ndarray:
    """Per-row median (or min) over `cols`, ignoring NaN; NaN where a row has no value there."""
    sub = matrix[:, cols]
    out = np.full(sub.shape[0], np.nan)
    for i, row in enumerate(sub):
        row = row[np.isfinite(row)]
        if row.size:
            out[i] = np.median(row) if how == "median" else row.min()
    return out


@dataclasses.dataclass(frozen=True)
class DepthProfile:
    """The pre-activation gradient norm of each weight layer in one window, input side first."""

    window: Window
    layers: tuple[int, ...]      # indices into run.layer_info
    grads: np.ndarray            # out_grad_norm, median over the window
    ratio: float                 # input side over output side: grads[0] / grads[-1]
    factor: float                # geometric fit: gradient multiplied by this per layer, output -> input
    r2: float                    # fit quality of log(grad) against layer index


def depth_profile(run: RunView, window: Window, min_layers: int) -> DepthProfile | None:
    """Geometric fit of out_grad_norm across weight layers (None with fewer than `min_layers`)."""
    idx = depth_layers(run)  # recurrent layers are depth in time: no point of the depth profile
    grads = window_values(run.stat_matrix(Stat.OUT_GRAD_NORM.value, copy=False), window.cols)[idx] if idx else np.array([])
    keep = [k for k, g in enumerate(grads) if np.isfinite(g)]
    if len(keep) < min_layers:
        return None
    layers = tuple(idx[k] for k in keep)
    g = np.maximum(grads[keep], TINY)
    slope, r2 = _fit(np.log(g))
    last = g[-1]
    return DepthProfile(window, layers, g, float(g[0] / last), float(math.exp(-slope)), r2)


def _fit(y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope of y against 0..n-1, and R^2 (1.0 for a perfectly flat profile)."""
    x = np.arange(len(y), dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(np.sum((y - (slope * x + intercept)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return float(slope), (1.0 - residual / total) if total > 0 else 1.0


def largest_step(profile: DepthProfile, vanishing: bool) -> tuple[int, float]:
    """(k, factor): between weight layers k and k+1 the gradient changes most (toward the input)."""
    steps = profile.grads[:-1] / profile.grads[1:]
    k = int(np.argmin(steps) if vanishing else np.argmax(steps))
    return k, float(steps[k])


def forward_factor(run: RunView, profile: DepthProfile) -> float:
    """Per-layer factor of the forward signal (act_std of the weight layers), from a geometric fit."""
    stds = window_values(run.stat_matrix(Stat.ACT_STD.value, copy=False), profile.window.cols)[list(profile.layers)]
    stds = stds[np.isfinite(stds)]
    if stds.size < 3:
        return math.nan
    slope, _ = _fit(np.log(np.maximum(stds, TINY)))
    return float(math.exp(slope))


def total_grad_norm(run: RunView, pre_clip: bool = False) -> np.ndarray:
    """Per step: sqrt of the sum over layers of grad_norm^2 (the norm `clip_grad_norm_` sees).

    NaN at steps without a gradient record; a non-finite layer value makes the step non-finite.
    `pre_clip`: of grad_norm_pre_clip where it was recorded (before any clipping).
    """
    stat = Stat.GRAD_NORM_PRE_CLIP if pre_clip and Stat.GRAD_NORM_PRE_CLIP.value in run.stats else Stat.GRAD_NORM
    g = run.stat_matrix(stat.value, copy=False)
    rec = run.recorded(stat.value, copy=False)
    out = np.full(len(run.steps), np.nan)
    for rows, cols in column_patterns(rec):  # columns recording the same layers: one contiguous sum per column
        if rows.size:
            col = np.ascontiguousarray(g[rows][:, cols].T, dtype=np.float64)  # [columns, layers]
            sums = np.sum(col ** 2, axis=1)
            out[cols] = np.where(np.isfinite(col).all(axis=1), np.sqrt(sums), math.inf)
    return out


def column_patterns(recorded: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, columns) per distinct column of a bool matrix: the rows set in those columns."""
    if recorded.shape[1] == 0:
        return []
    packed = np.packbits(recorded, axis=0).T  # [columns, bytes]: one key per column
    keys, inverse = np.unique(np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel(),
                              return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    out = []
    for k in range(len(keys)):
        cols = order[bounds[k]:bounds[k + 1]]
        out.append((np.flatnonzero(recorded[:, cols[0]]), cols))
    return out


def running_medians(x: np.ndarray, history: int, start: int) -> np.ndarray:
    """median(x[max(0, k - history):k]) for k = start .. len(x) - 1 (x finite), as np.median of each window."""
    n = len(x)
    out = np.empty(max(0, n - start))
    for k in range(start, min(n, max(start, history))):  # the first windows are shorter than `history`
        out[k - start] = np.median(x[:k])
    first = max(start, history)
    if first < n:
        windows = np.lib.stride_tricks.sliding_window_view(x, history)[first - history:n - history]
        for a in range(0, len(windows), 1 << 14):  # bounded memory: median copies its input
            part = windows[a:a + (1 << 14)]
            out[first - start + a:first - start + a + len(part)] = np.median(part, axis=1)
    return out


def finite_median(m: np.ndarray) -> np.ndarray:
    """Per column: the median of its finite values (NaN where none), as np.median of those values."""
    finite = np.isfinite(m)
    count = finite.sum(axis=0)
    x = np.sort(np.where(finite, m, np.inf), axis=0)
    out = np.full(m.shape[1], np.nan)
    j = np.arange(m.shape[1])
    odd, even = (count % 2 == 1), (count > 0) & (count % 2 == 0)
    out[odd] = x[count[odd] // 2, j[odd]]
    out[even] = (x[count[even] // 2 - 1, j[even]] + x[count[even] // 2, j[even]]) / 2
    return out


def loss_series(run: RunView) -> np.ndarray | None:
    """The logged loss (key "loss", else the first key containing "loss"), or None."""
    keys = [k for k in run.scalars if k == "loss"] or [k for k in run.scalars if "loss" in k.lower()]
    return run.scalar(keys[0]) if keys else None


def loss_change(run: RunView, early: int, late: int) -> float | None:
    """Relative change of the loss between the first and the last window (negative: it fell)."""
    loss = loss_series(run)
    if loss is None:
        return None
    finite = loss[np.isfinite(loss)]
    if finite.size < 2:
        return None
    start, end = float(np.median(finite[:early])), float(np.median(finite[-late:]))
    return (end - start) / abs(start) if start != 0 else math.inf if end != start else 0.0


def layer_names(run: RunView, indices: list[int] | tuple[int, ...]) -> tuple[str, ...]:
    return tuple(run.layer_info[i].name for i in indices)
