"""Figures of a recorded run: each function takes recorded data and an optional Axes, returns the Axes.

    ax = figures.gradient_flow(run)                  # per-layer gradient norms, log scale
    ax = figures.heatmap(run, "out_grad_norm")       # layer x step, log colour
    page.figure(ax.figure, caption="...")            # into an HtmlPage

matplotlib is imported inside the functions (the `[report]` extra); figures are plain
`matplotlib.figure.Figure`s on the Agg canvas, never pyplot's. Nothing here computes a
statistic: the functions select recorded values and draw them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, NotFoundError
from ..store.view import RunView
from ._axes import (check_run, depth_colors, depth_legend, layer_label, layer_ticks, layers_with, mark_at_bottom,
                    matplotlib, new_axes, plain, positive, require, step_columns, subsample, weight_layers)
from ._figures_recurrent import time_heatmap, time_profile
from ._figures_time import loss_curve, overlay, unit_fractions, update_ratio

__all__ = ["gradient_flow", "heatmap", "histograms", "unit_fractions", "update_ratio", "loss_curve", "overlay",
           "time_profile", "time_heatmap"]

MAX_HEATMAP_STEPS = 500  # columns drawn at most; a longer run is subsampled evenly (first and last kept)
NONFINITE_COLOR, ZERO_COLOR = "#ff00ff", "#3a8fd9"  # heatmap cells: recorded NaN/Inf; exact 0 on a log scale


def gradient_flow(run: RunView, steps: Sequence[int] | None = None, *, prediction: Any = None,
                  stats: Sequence[str] = ("out_grad_norm", "grad_norm"), layers: Sequence[str] | None = None,
                  ax: Any = None) -> Any:
    """Per-layer gradient norms at chosen steps, input side left, on a log scale.

    Vanishing gradients show as a slope down toward the input; a linear axis would hide them.
    `out_grad_norm` (||dL/d output||, what theory predicts) is drawn solid with circles,
    `grad_norm` (the weight gradient) dashed with squares, one colour per step. A layer whose
    drawn norm is NaN/Inf gets a red tick at the bottom, one whose norm is exactly 0 a grey
    triangle: a log axis could not show them, and they are never hidden.

    Args:
        run: a recorded run.
        steps: recorded steps to draw (default: the first and the last).
        prediction: a `graddoctor.predict(model)` result: its relative ||dL/dh|| per layer is
            drawn dotted, scaled to meet the measured `out_grad_norm` at the last predicted
            layer at the first drawn step.
        stats: which of the two statistics to draw.
        layers: layers to draw (default: the layers with parameters, where theory predicts the
            flow; activation layers' own ||dL/d output|| would zigzag between them).
        ax: Axes to draw into (default: a new figure).
    """
    run = check_run(run, "gradient_flow")
    layers = weight_layers(run) if layers is None else layers
    found = {name for stat in stats for name in layers_with(run, stat, layers)}
    layers = [name for name in run.layers if name in found]
    require(layers, "gradient norms (" + " or ".join(stats) + ")", run, "watch a model with trainable layers")
    ax = new_axes(ax)
    x = np.arange(len(layers))
    rows = [run.layers.index(name) for name in layers]
    cols = step_columns(run, steps)
    colors = depth_colors(len(cols)) if len(cols) > 2 else ["#1f5fa8", "#d2461e"][: len(cols)]
    styles = {"out_grad_norm": ("-", "o", "||dL/d output||"), "grad_norm": ("--", "s", "||dL/dW||")}
    for col, color in zip(cols, colors):
        for stat in stats:
            line, marker, label = styles.get(stat, (":", "^", stat))
            y = positive(run.stat_matrix(stat, copy=False)[rows, col])
            has = run.recorded(stat, copy=False)[rows, col]  # connect the layers that have the stat (grad_norm: weight layers)
            ax.plot(x[has], y[has], line, marker=marker, color=color, label=f"{label}, step {int(run.steps[col])}")
    _mark_unplottable(ax, run, rows, cols, stats)
    if prediction is not None:
        _theory_line(ax, run, layers, prediction, cols[0])
    ax.set_yscale("log")
    ticks, names = layer_ticks(layers)
    crowded = len(names) > 12 or max(len(n) for n in names) > 10 or sum(len(n) for n in names) > 50
    ax.set_xticks(ticks, names, rotation=60 if crowded else 0, ha="right" if crowded else "center",
                  fontsize="small" if crowded else None)
    ax.set_xlabel("layer (input side first)")
    ax.set_ylabel("gradient norm (log)")
    ax.set_title(f"gradient flow: {plain(run.name)}")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def _mark_unplottable(ax: Any, run: RunView, rows: list[int], cols: list[int], stats: Sequence[str]) -> None:
    """Layers whose drawn norm is NaN/Inf (red ticks) or exactly 0 (grey triangles): a log axis would drop them."""
    bad = zero = np.zeros(len(rows), dtype=bool)
    for stat in stats:
        values, has = run.stat_matrix(stat, copy=False)[rows][:, cols], run.recorded(stat, copy=False)[rows][:, cols]
        bad = bad | (has & ~np.isfinite(values)).any(axis=1)
        zero = zero | (has & (values == 0)).any(axis=1)
    x = np.arange(len(rows))
    mark_at_bottom(ax, x, bad, label="NaN/Inf")
    mark_at_bottom(ax, x, zero, label="0 (below the log axis)", marker="v", color="0.45")


def _theory_line(ax: Any, run: RunView, layers: list[str], prediction: Any, col: int) -> None:
    rel = {p.name: p.rel_out_grad_norm for p in prediction.layers if p.rel_out_grad_norm is not None}
    shown = [(k, rel[name]) for k, name in enumerate(layers) if name in rel]
    if not shown:
        return
    last_k, _ = shown[-1]
    anchor = run.stat("out_grad_norm", layers[last_k])[col]
    if not np.isfinite(anchor) or anchor <= 0:
        return
    ks = [k for k, _ in shown]
    ax.plot(ks, [anchor * r for _, r in shown], ":", color="0.35", marker="x",
            label=f"theory at init (scaled at layer {layer_label(layers[last_k])})")


def heatmap(data: RunView | np.ndarray, stat: str = "out_grad_norm", *, layers: Sequence[str] | None = None,
            steps: Sequence[int] | None = None, max_steps: int = MAX_HEATMAP_STEPS, ax: Any = None) -> Any:
    """Layer x step map of one statistic with a log colour scale; input side at the top.

    Args:
        data: a recorded run, or a [n_layers, n_steps] array (then `layers` and `steps` label it).
        stat: statistic to map (any recorded one; negative values get a symmetric log scale).
        layers: rows to show (default: every layer that recorded `stat`).
        steps: with an array, the step of each column (default 0, 1, ...).
        max_steps: columns drawn at most: a longer run is subsampled evenly, first and last kept,
            which bounds the image (and the report) whatever the run's length.
        ax: Axes to draw into.

    Grey cells were not recorded; magenta cells hold a recorded NaN or Inf (never hidden); on a
    log scale, blue cells hold an exact 0 (a dead unit fraction of 0, a layer with no gradient).
    """
    values, recorded, names, xs, title = _heatmap_data(data, stat, layers, steps, max_steps)
    keep = subsample(values.shape[1], max_steps)
    values, recorded, xs = values[:, keep], recorded[:, keep], xs[keep]
    mpl = matplotlib()
    ax = new_axes(ax, figsize=(8.0, min(12.0, max(2.5, 0.9 + 0.22 * len(names)))))
    cmap = mpl.colormaps["magma"].with_extremes(bad="#d9d9d9")
    finite = values[np.isfinite(values)]
    norm = _log_norm(mpl, finite)
    shown = np.where(np.isfinite(values), values, np.nan)
    edges = _edges(xs)
    y_edges = np.arange(len(names) + 1)
    mesh = ax.pcolormesh(edges, y_edges, np.ma.masked_invalid(shown), cmap=cmap, norm=norm, rasterized=True)
    _paint(ax, edges, y_edges, recorded & ~np.isfinite(values), NONFINITE_COLOR)
    if isinstance(norm, mpl.colors.LogNorm):  # a log scale masks 0 as it does a missing value: said apart
        _paint(ax, edges, y_edges, recorded & (values == 0), ZERO_COLOR)
    ax.set_ylim(len(names), 0)
    ticks, labels = layer_ticks(names)
    ax.set_yticks(ticks + 0.5, labels, fontsize="small" if len(labels) < 30 else "x-small")
    ax.set_xlabel("step")
    ax.set_ylabel("layer (input side at top)")
    ax.set_title(title)
    ax.figure.colorbar(mesh, ax=ax, label=stat + (" (log)" if isinstance(norm, mpl.colors.LogNorm) else " (symlog)"))
    return ax


def _heatmap_data(data: Any, stat: str, layers: Sequence[str] | None, steps: Sequence[int] | None,
                  max_steps: int) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, str]:
    if isinstance(data, RunView):
        run = check_run(data, "heatmap")
        names = layers_with(run, stat, layers)
        require(names, f"values of {stat!r}", run, "pick a statistic the run recorded")
        rows = [run.layers.index(n) for n in names]
        cols = subsample(len(run.steps), max_steps)  # only the drawn columns are read
        values, recorded = run.stat_window(stat, cols)
        return (values[rows], recorded[rows], names, run.steps[cols].astype(float),
                f"{stat} per layer and step: {plain(run.name)}")
    values = np.asarray(data, dtype=float)
    if values.ndim != 2 or values.size == 0:
        raise ConfigError(f"heatmap() takes a RunView or a non-empty 2-D [layers, steps] array, got shape {values.shape}.")
    names = list(layers) if layers is not None else [str(k) for k in range(values.shape[0])]
    xs = np.asarray(steps if steps is not None else np.arange(values.shape[1]), dtype=float)
    if len(names) != values.shape[0] or len(xs) != values.shape[1]:
        raise ConfigError(f"heatmap(): array of shape {values.shape} but {len(names)} layer names and {len(xs)} steps: "
                         "give one name per row and one step per column.")
    return values, ~np.isnan(values), names, xs, f"{stat} per layer and step"


def _paint(ax: Any, edges: np.ndarray, y_edges: np.ndarray, where: np.ndarray, color: str) -> None:
    """Cells where `where` holds, in one flat colour over the map (values the colour scale cannot show)."""
    if where.any():
        mpl = matplotlib()
        ax.pcolormesh(edges, y_edges, np.ma.masked_where(~where, np.ones(where.shape)),
                      cmap=mpl.colors.ListedColormap([color]), rasterized=True)


def _log_norm(mpl: Any, finite: np.ndarray) -> Any:
    if finite.size and (finite < 0).any():
        scale = np.abs(finite[finite != 0])
        linthresh = float(np.percentile(scale, 10)) if scale.size else 1.0
        return mpl.colors.SymLogNorm(linthresh=linthresh)
    pos = finite[finite > 0]
    lo, hi = (float(pos.min()), float(pos.max())) if pos.size else (1e-3, 1.0)
    return mpl.colors.LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 10)


def _edges(xs: np.ndarray) -> np.ndarray:
    """Cell edges around each column's step: midpoints between steps (steps may be log-spaced)."""
    if len(xs) == 1:
        return np.array([xs[0] - 0.5, xs[0] + 0.5])
    mid = (xs[1:] + xs[:-1]) / 2
    return np.concatenate([[xs[0] - (mid[0] - xs[0])], mid, [xs[-1] + (xs[-1] - mid[-1])]])


def histograms(run: RunView, kind: str = "act", *, step: int | None = None, layers: Sequence[str] | None = None,
               ax: Any = None) -> Any:
    """Per-layer histograms at one step, one curve per layer (Glorot & Bengio 2010, figures 6-7).

    Each curve is the layer's 64-bin histogram over its own range at that step (per-step ranges,
    not all-time ones, which make healthy nets look as if they vanish), as the fraction of the
    layer's finite values in each bin (heights comparable across layers whatever their range).

    Args:
        run: a recorded run with histograms (`watch(..., hist_every=N)`).
        kind: "act" (layer outputs) or "grad" (gradients of the layer's parameters).
        step: recorded histogram step (default: the last step that has histograms).
        layers: layers to draw (default: every layer with a histogram at that step).
        ax: Axes to draw into.
    """
    run = check_run(run, "histograms")
    if kind not in ("act", "grad"):
        raise ConfigError(f"histograms(kind=...) is 'act' or 'grad', got {kind!r}.")
    names = layers if layers is not None else _hist_layers(run, kind)
    per_layer = {n: {h[0]: h for h in run.hist(n, kind)} for n in names}
    have = sorted({s for hs in per_layer.values() for s in hs})
    if not have:
        raise ConfigError(f"run {run.name!r} has no {kind!r} histograms: record them with "
                         f"graddoctor.watch(..., hist_every=N) (0 turns them off).")
    chosen = have[-1] if step is None else int(step)
    if chosen not in have:
        raise NotFoundError(f"no {kind!r} histogram at step {chosen} in run {run.name!r}; histogram steps: {have}.")
    drawn = [(n, hs[chosen]) for n, hs in per_layer.items() if chosen in hs]
    ax = new_axes(ax)
    for (name, (_, lo, hi, nonfinite, counts)), color in zip(drawn, depth_colors(len(drawn))):
        edges = np.linspace(lo, hi, len(counts) + 1) if np.isfinite(lo) and np.isfinite(hi) else None
        if edges is None or counts.sum() == 0:  # nothing finite to draw: the legend still says why
            ax.plot([], [], color=color, label=f"{layer_label(name)}: all {nonfinite} values NaN/Inf" if nonfinite
                    else f"{layer_label(name)}: no value", gid="key")
            continue
        extra = f", {nonfinite} non-finite" if nonfinite else ""
        ax.stairs(counts / counts.sum(), edges, color=color, label=f"{layer_label(name)}{extra}")
    what = "activation value (layer output)" if kind == "act" else "parameter gradient value"
    ax.set_xlabel(what)
    ax.set_ylabel("fraction of values per bin")
    ax.set_title(f"{'activation' if kind == 'act' else 'gradient'} histograms per layer, step {chosen}: {plain(run.name)}")
    depth_legend(ax, fontsize="x-small", ncol=2 if len(drawn) > 8 else 1)
    return ax


def _hist_layers(run: RunView, kind: str) -> list[str]:
    # Glorot & Bengio plot the outputs of the nonlinearities: activation layers when they have
    # histograms (a pre-activation's wider range would squash them), else every layer.
    acts = [i.name for i in run.layer_info if i.kind == "activation" and run.hist(i.name, kind)]
    return acts if kind == "act" and acts else run.layers


def curves_of(runs: Mapping[str, RunView], stat: str, layer: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{run name: (steps, values)} of one layer's `stat` (or a scalar such as 'loss' with layer=None) for `overlay`.

    Only the steps where the value was recorded (or logged): a key logged every 20 steps is one
    connected curve, not isolated points between gaps.
    """
    out = {}
    for label, run in runs.items():
        if layer is None:
            keep = run.scalar_recorded(stat)
            out[label] = (run.steps[keep], run.scalar(stat)[keep] if stat in run.scalars else np.array([]))
        else:
            values = run.stat(stat, layer)  # a KeyError naming the layers when there is no such layer
            keep = run.recorded(stat)[run.layers.index(layer)]
            out[label] = (run.steps[keep], values[keep])
    return out
