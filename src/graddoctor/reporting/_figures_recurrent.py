"""Figures of gradient flow through time (docs/through-time.md): per-step profiles and the time x step map.

Re-exported by `graddoctor.reporting.figures`; matplotlib only through `_axes`. Values are the
recorded buckets of `in_grad_norm_t` (or `out_grad_norm_t`), drawn at each bucket's centre.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..store.view import RunView
from ._axes import check_run, depth_colors, mark_at_bottom, matplotlib, new_axes, plain, step_columns


def _series(run: RunView, layer: str | None, stat: str) -> tuple[str, np.ndarray, np.ndarray]:
    names = run.time_layers(stat)
    if not names:
        from ..errors import GradDoctorError

        raise GradDoctorError(f"run {run.name!r} recorded no {stat!r}: it is recorded for nn.RNN/LSTM/GRU layers and "
                              "recurrent cells (docs/through-time.md).")
    layer = layer if layer is not None else names[0]
    values, edges = run.time_stat(stat, layer)
    e = np.asarray(edges, dtype=float)
    return layer, values, (e[:-1] + e[1:] - 1) / 2.0


def time_profile(run: RunView, layer: str | None = None, steps: Sequence[int] | None = None, *,
                 stat: str = "in_grad_norm_t", ax: Any = None) -> Any:
    """Gradient against time step (log scale) at chosen training steps (default: first, middle, last).

    Exactly-zero buckets are marked at the bottom (a log axis cannot show 0).
    """
    run = check_run(run, "time_profile")
    layer, values, centres = _series(run, layer, stat)
    rows = [j for j in range(len(run.steps)) if np.isfinite(values[j]).any()]
    if steps is None:
        cols = sorted({rows[0], rows[len(rows) // 2], rows[-1]}) if rows else []
    else:
        cols = [c for c in step_columns(run, steps) if c in rows]
    ax = new_axes(ax)
    for col, color in zip(cols, depth_colors(len(cols))):
        v = values[col]
        ax.plot(centres, np.where(v > 0, v, np.nan), "-o", ms=2.5, color=color, label=f"step {int(run.steps[col])}")
        if (v == 0).any():
            mark_at_bottom(ax, centres, v == 0, label="_", color=color)
    ax.set_yscale("log")
    ax.set_xlabel("time step t (input side of the sequence at left)")
    ax.set_ylabel(f"{stat} (log)")
    ax.set_title(f"{plain(layer)}: gradient through time, {plain(run.name)}")
    ax.legend(fontsize="small")
    return ax


def time_heatmap(run: RunView, layer: str | None = None, *, stat: str = "in_grad_norm_t", ax: Any = None) -> Any:
    """Time step x training step map of the per-step gradient, log colour (blue: exactly 0, grey: not recorded)."""
    run = check_run(run, "time_heatmap")
    layer, values, centres = _series(run, layer, stat)
    mpl = matplotlib()
    ax = new_axes(ax, figsize=(8.0, 4.0))
    finite = values[np.isfinite(values) & (values > 0)]
    norm = mpl.colors.LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    cmap = mpl.colormaps["magma"].with_extremes(bad="#d9d9d9")
    shown = np.ma.masked_invalid(np.where(values > 0, values, np.nan)).T
    steps = run.steps.astype(float)
    x_edges = np.concatenate([[steps[0] - 0.5], (steps[1:] + steps[:-1]) / 2, [steps[-1] + 0.5]]) if len(steps) else [0, 1]
    _, edges = run.time_stat(stat, layer)
    mesh = ax.pcolormesh(x_edges, np.asarray(edges, dtype=float), shown, cmap=cmap, norm=norm, rasterized=True)
    zeros = np.ma.masked_where(~(values == 0).T, np.ones_like(values.T))
    ax.pcolormesh(x_edges, np.asarray(edges, dtype=float), zeros, cmap=mpl.colors.ListedColormap(["#3b6fd4"]),
                  rasterized=True)
    ax.set_xlabel("training step")
    ax.set_ylabel("time step t")
    ax.set_title(f"{plain(layer)}: {stat} per time step and training step")
    ax.figure.colorbar(mesh, ax=ax, label=f"{stat} (log)")
    return ax
