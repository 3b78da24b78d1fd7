"""Numbers the rules share: step windows, the depth profile of the gradient, the total gradient norm.

Pure functions of a `RunView` (numpy only). Non-finite values are left out of medians and fits;
the `nonfinite` rule is the one that reports them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..config import Stat
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
    stats = (Stat.GRAD_NORM.value, Stat.OUT_GRAD_NORM.value)
    values = np.concatenate([run.stat_matrix(s) for s in stats])
    recorded = np.concatenate([run.recorded(s) for s in stats])
    nonfinite = recorded & ~np.isfinite(values)
    return np.flatnonzero(~nonfinite.any(axis=0))


def nonfinite_mask(run: RunView, stat: str) -> np.ndarray:
    """[n_layers, n_steps] bool: a recorded value of `stat` is NaN or infinite.

    An infinite update_ratio of a layer whose weights are exactly zero (a zero-initialised head) is
    ||dw|| / 0 by definition, not a numerical failure: it is left out.
    """
    mask = run.recorded(stat) & ~np.isfinite(run.stat_matrix(stat))
    if stat == Stat.UPDATE_RATIO.value:
        mask &= run.stat_matrix(Stat.WEIGHT_NORM.value) != 0
    return mask


def nonfinite_cells(run: RunView, col: int) -> list[tuple[int, str]]:
    """(layer index, stat) of every non-finite statistic recorded at column `col`."""
    return [(int(i), stat) for stat in run.stats for i in np.flatnonzero(nonfinite_mask(run, stat)[:, col])]


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
    Stat.WEIGHT_NORM.value, Stat.UPDATE_RATIO.value, Stat.ACT_MEAN.value, Stat.ACT_STD.value,
    Stat.ACT_ZERO_FRAC.value, Stat.DEAD_FRAC.value, Stat.SATURATED_FRAC.value, Stat.GRAD_NORM_PRE_CLIP.value,
    Stat.LOGIT_LSE.value, Stat.LOGIT_MAX.value, Stat.ATTN_LOGIT_MAX.value, Stat.ATTN_ENTROPY.value,
    Stat.ATTN_ENTROPY_MIN_HEAD.value,
})


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
    grads = window_values(run.stat_matrix(Stat.OUT_GRAD_NORM.value), window.cols)[idx] if idx else np.array([])
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
    stds = window_values(run.stat_matrix(Stat.ACT_STD.value), profile.window.cols)[list(profile.layers)]
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
    g = run.stat_matrix(stat.value)
    rec = run.recorded(stat.value)
    out = np.full(len(run.steps), np.nan)
    for j in range(len(run.steps)):
        col = g[rec[:, j], j]
        if col.size:
            out[j] = math.sqrt(float(np.sum(col.astype(np.float64) ** 2))) if np.all(np.isfinite(col)) else math.inf
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
