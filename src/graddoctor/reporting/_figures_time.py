"""Figures over training time: unit fractions, update ratios, the loss, and several curves overlaid.

Re-exported by `graddoctor.reporting.figures`; matplotlib only through `_axes`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..config import update_stat
from ..errors import ConfigError, NotFoundError
from ..store.view import RunView
from ._axes import (check_run, depth_colors, depth_legend, layer_label, layers_with, mark_at_bottom, new_axes, plain,
                    positive, require, subsample)

UPDATE_GUIDE = 1e-3  # Karpathy's rule of thumb: ||dW|| / ||W|| near 1e-3 per step is healthy
MAX_LINE_STEPS = 500  # points per layer's line at most; a longer run is subsampled evenly (NaN/Inf marks use every step)
MAX_LINES = 40  # layers drawn as lines at most; a deeper model draws every k-th layer, first and last kept (the title
#                 says how many; NaN/Inf marks use every layer). Drawing 400 layers' lines took most of a report's time.


def _drawn(names: list[str]) -> tuple[list[str], str]:
    """The layers drawn as lines (at most MAX_LINES, evenly spaced in depth) and what the title says of them."""
    if len(names) <= MAX_LINES:
        return names, ""
    return [names[k] for k in subsample(len(names), MAX_LINES)], f" ({MAX_LINES} of {len(names)} layers, evenly spaced)"


def unit_fractions(run: RunView, layers: Sequence[str] | None = None, *, ax: Any = None) -> Any:
    """Dead (solid) and saturated (dashed) fractions of units per activation layer over steps, in [0, 1].

    Args:
        run: a recorded run.
        layers: layers to draw (default: every layer that recorded `dead_frac` or `saturated_frac`).
        ax: Axes to draw into.
    """
    run = check_run(run, "unit_fractions")
    dead = layers_with(run, "dead_frac", layers)
    sat = layers_with(run, "saturated_frac", layers)
    names = [n for n in run.layers if n in set(dead) | set(sat)]
    require(names, "dead or saturated fractions", run, "they are recorded for activation layers")
    ax = new_axes(ax)
    cols = subsample(len(run.steps), MAX_LINE_STEPS)
    names, shown = _drawn(names)
    for name, color in zip(names, depth_colors(len(names))):  # the legend names each layer once, by colour
        label = layer_label(name)
        if name in dead:
            ax.plot(run.steps[cols], run.stat("dead_frac", name)[cols], "-", color=color, label=label, gid="dead")
            label = "_"
        if name in sat:
            ax.plot(run.steps[cols], run.stat("saturated_frac", name)[cols], "--", color=color, label=label,
                    gid="saturated")
    for style, what in (("-", "dead"), ("--", "saturated")):
        ax.plot([], [], style, color="0.2", label=what, gid="key")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of units")
    ax.set_title(f"dead (solid) and saturated (dashed) units{shown}: {plain(run.name)}")
    ax.grid(True, alpha=0.3)
    depth_legend(ax, fontsize="x-small", ncol=2 if len(names) > 6 else 1)
    return ax


def update_ratio(run: RunView, layers: Sequence[str] | None = None, *, guide: float = UPDATE_GUIDE, ax: Any = None) -> Any:
    """||dW|| / ||W|| per step for each layer with parameters, log scale, with a guide line at `guide`.

    Far below the guide the layer barely learns (stalled); far above, its weights churn. A step
    where some layer's ratio is NaN/Inf gets a red tick at the bottom (a log axis would drop it).
    """
    run = check_run(run, "update_ratio")
    stat = update_stat(run.stats)  # the exact update_ratio, else its sampled estimate update_ratio_est
    names = layers_with(run, stat, layers)
    require(names, "update ratios", run, "watch with an optimizer and update_ratio=\"sample\" (the default) or \"exact\"")
    ax = new_axes(ax)
    cols = subsample(len(run.steps), MAX_LINE_STEPS)
    drawn, shown = _drawn(names)
    for name, color in zip(drawn, depth_colors(len(drawn))):
        ax.plot(run.steps[cols], positive(run.stat(stat, name)[cols]), color=color, label=layer_label(name))
    ax.axhline(guide, color="0.3", linestyle="--", linewidth=1, label=f"guide {guide:g}", gid="key")
    rows = [run.layers.index(name) for name in names]
    values = run.stat_matrix(stat, copy=False)[rows]
    recorded = run.recorded(stat, copy=False)[rows]
    mark_at_bottom(ax, run.steps, (recorded & ~np.isfinite(values)).any(axis=0), label="NaN/Inf (a layer)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||dW|| / ||W|| (log)")
    estimated = " (estimated from a sample of each weight)" if stat != "update_ratio" else ""
    ax.set_title(f"update ratio{estimated} per layer{shown} (input side dark): {plain(run.name)}")
    ax.grid(True, which="major", alpha=0.3)
    depth_legend(ax, fontsize="x-small", ncol=2 if len(drawn) > 8 else 1)
    return ax


def loss_curve(data: RunView | Sequence[float] | np.ndarray, key: str = "loss", *,
               steps: Sequence[float] | None = None, logy: bool | None = None, ax: Any = None) -> Any:
    """The logged loss (or any `run.log` key) over steps; non-finite values marked with red ticks.

    Args:
        data: a recorded run (its scalar `key`) or the values themselves.
        key: scalar to draw from a run (default "loss").
        steps: with values, the step of each (default 0, 1, ...).
        logy: log y axis; default when every finite value is positive and they span > 100x.
        ax: Axes to draw into.
    """
    if isinstance(data, RunView):
        run = check_run(data, "loss_curve")
        if key not in run.scalars:
            raise NotFoundError(f"run {run.name!r} logged no {key!r}: call run.log({key}=...) after optimizer.step(); "
                           f"it logged: {', '.join(run.scalars) or 'nothing'}.")
        xs, ys, title = run.steps, run.scalar(key), f"{plain(key)}: {plain(run.name)}"
    else:
        ys = np.asarray(data, dtype=float)
        xs = np.asarray(steps if steps is not None else np.arange(len(ys)))
        title = plain(key)
        if ys.ndim != 1 or len(xs) != len(ys):
            raise ConfigError(f"loss_curve() takes a RunView or 1-D values with one step each; got values of shape "
                             f"{ys.shape} and {len(xs)} steps.")
    ax = new_axes(ax)
    ax.plot(xs, ys, color="#1f5fa8", label=plain(key))
    # A logged NaN/Inf is marked, never hidden; a step where the key was not logged is just a gap.
    bad = ~np.isfinite(ys) & (data.scalar_recorded(key) if isinstance(data, RunView) else True)
    mark_at_bottom(ax, xs, bad, label="NaN/Inf")
    finite = ys[np.isfinite(ys)]
    if logy is None:
        logy = bool(finite.size) and bool((finite > 0).all()) and finite.max() > 100 * finite.min()
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(plain(key))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def overlay(curves: Mapping[str, Any], *, xlabel: str = "step", ylabel: str = "", title: str = "",
            logy: bool = False, guide: float | None = None, ax: Any = None) -> Any:
    """Several labelled curves on one Axes: runs of a comparison, variants of a lab study.

    Example:
        >>> ax = overlay({"sigmoid": [1, .5, .2], "relu": [1, .9, .8]}, ylabel="loss")  # doctest: +SKIP

    Args:
        curves: label -> y values, or (x, y); x may be layer names (a categorical axis).
        xlabel, ylabel, title: axis labels and title (plain text).
        logy: log y axis (zeros and negatives are left as gaps).
        guide: a dashed horizontal reference line at this value.
        ax: Axes to draw into.
    """
    if not curves:
        raise ConfigError("overlay() needs at least one curve: {label: values} or {label: (x, values)}.")
    ax = new_axes(ax)
    for (label, curve), color in zip(curves.items(), _palette(len(curves))):
        x, y = curve if isinstance(curve, tuple) and len(curve) == 2 else (None, curve)
        y = np.asarray(y, dtype=float)
        x = np.arange(len(y)) if x is None else x
        if len(x) != len(y):
            raise ConfigError(f"overlay(): curve {label!r} has {len(x)} x values and {len(y)} y values.")
        ax.plot(x, positive(y) if logy else y, marker="o" if len(y) <= 40 else None, markersize=3,
                color=color, label=plain(label))
    if guide is not None:
        ax.axhline(guide, color="0.3", linestyle="--", linewidth=1, label=f"guide {guide:g}")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def _palette(n: int) -> list[Any]:
    tab = ["#1f5fa8", "#d2461e", "#2a9d4b", "#8c4fb5", "#c7921a", "#1aa3a3", "#7a7a7a", "#b5306b", "#5a7a1a", "#333"]
    return [tab[k % len(tab)] for k in range(n)]
