"""Shared plumbing of the figure functions: import matplotlib on demand, make Axes without pyplot.

Figures are `matplotlib.figure.Figure` objects, not pyplot ones: no global figure list, no GUI
backend, nothing to close by hand (STYLE: no global state). Only reporting/ imports matplotlib.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..diagnosis.families import depth_layers
from ..errors import ArgumentTypeError, ConfigError, GradDoctorError, NotFoundError
from ..store.view import RunView

# Colours by depth: input side dark, output side light, as in Glorot & Bengio's figures.
DEPTH_CMAP = "viridis"
MAX_TICKS = 40    # layer names labelled at most on an axis; a deeper model gets every k-th name
MAX_LEGEND = 12   # per-layer legend entries at most; a deeper model lists a few, from input to output


def matplotlib() -> Any:
    """The matplotlib module, or a GradDoctorError naming the extra to install."""
    try:
        import matplotlib as mpl
    except ImportError:
        raise GradDoctorError(
            "graddoctor's figures and HTML report need matplotlib, which is not installed: "
            "pip install 'graddoctor[report]'."
        ) from None
    return mpl


def new_axes(ax: Any = None, *, figsize: tuple[float, float] = (7.5, 3.8)) -> Any:
    """`ax` itself, or the Axes of a new Figure (Agg canvas, not registered with pyplot)."""
    if ax is not None:
        return ax
    matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def depth_colors(n: int) -> list[Any]:
    """n colours from input side (dark) to output side (light)."""
    mpl = matplotlib()
    cmap = mpl.colormaps[DEPTH_CMAP]
    return [cmap(0.9 * k / max(n - 1, 1)) for k in range(n)]


def plain(text: object) -> str:
    """User text (a layer or run name, a logged key) for a matplotlib label: '$' escaped so it is
    never parsed as mathtext (an odd name would otherwise fail to draw or draw as a formula)."""
    return str(text).replace("$", r"\$")


def layer_label(name: str) -> str:
    """The layer's qualified name as label text; the root module (empty name) reads '(root)'."""
    return plain(name) if name else "(root)"


def weight_layers(run: RunView) -> list[str] | None:
    """The depth profile's layers (diagnosis.families.depth_layers: weight and embedding roles), where
    theory predicts the flow; else every layer with parameters; None when there is none.

    Normalisation layers (LayerNorm outputs have a gradient of their own scale, which would turn a
    transformer's profile into a zigzag) are left out when weight layers remain.
    """
    weights = [run.layer_info[i].name for i in depth_layers(run)]
    return weights or [i.name for i in run.layer_info if i.kind == "param"] or None


def check_run(run: Any, function: str) -> RunView:
    """`run` itself when it is a RunView; otherwise a TypeError that says how to get one."""
    if not isinstance(run, RunView):
        raise ArgumentTypeError(f"{function}() takes a RunView, got {type(run).__name__}: read a run with "
                        f"graddoctor.load('runs.db', name=...) or graddoctor.load(run) for a live run.")
    if len(run.steps) == 0:
        raise ConfigError(f"{function}(): run {run.name!r} has no recorded step yet; record at least one step.")
    return run


def layers_with(run: RunView, stat: str, layers: Sequence[str] | None = None) -> list[str]:
    """The layers (in run order) that recorded `stat` at least once, or `layers` checked against the run."""
    recorded = run.recorded(stat).any(axis=1)
    have = [name for name, ok in zip(run.layers, recorded) if ok]
    if layers is None:
        return have
    missing = [name for name in layers if name not in run.layers]
    if missing:
        raise NotFoundError(f"no layer {missing[0]!r} in run {run.name!r}; its layers are: {', '.join(run.layers)}.")
    return [name for name in layers if name in have]


def require(values: Sequence[Any], what: str, run: RunView, hint: str) -> None:
    """A ValueError when there is nothing to draw, saying what was missing and how to record it."""
    if len(values) == 0:
        raise ConfigError(f"run {run.name!r} has no {what} to plot ({hint}); it recorded: {', '.join(run.stats) or 'nothing'}.")


def step_columns(run: RunView, steps: Sequence[int] | None, default: str = "ends") -> list[int]:
    """Array columns of the chosen recorded steps; default: the first and the last step."""
    if steps is None:
        cols = [0, len(run.steps) - 1] if default == "ends" else [len(run.steps) - 1]
        return sorted(set(cols))
    return [run.step_index(int(s)) for s in steps]


def layer_ticks(names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Positions and labels of at most MAX_TICKS layer names, evenly spaced, first and last kept.

    Past MAX_TICKS layers in blocks (`blocks.3.`, `transformer.h.3.`), one tick per block at its first
    layer, labelled with the block's name (every k-th block past MAX_TICKS blocks).
    """
    if len(names) > MAX_TICKS:
        from ..diagnosis.architecture import block_of

        starts = [k for k, name in enumerate(names) if block_of(name) and (k == 0 or block_of(names[k - 1]) != block_of(name))]
        if len(starts) >= 3:
            chosen = [starts[k] for k in subsample(len(starts), MAX_TICKS)]
            return np.array(chosen), [layer_label(block_of(names[k]) or names[k]) for k in chosen]
    keep = subsample(len(names), MAX_TICKS)
    return keep, [layer_label(names[k]) for k in keep]


def depth_legend(ax: Any, **kwargs: Any) -> None:
    """The legend of per-layer curves; past MAX_LEGEND layers, an evenly spaced few (the colour says the rest)."""
    handles, labels = ax.get_legend_handles_labels()
    per_layer = [k for k, h in enumerate(handles) if h.get_gid() != "key"]
    if len(per_layer) > MAX_LEGEND:
        chosen = {per_layer[k] for k in subsample(len(per_layer), MAX_LEGEND // 2)}
        keep = [k for k in range(len(handles)) if k in chosen or k not in per_layer]
        handles, labels = [handles[k] for k in keep], [labels[k] for k in keep]
    if len(per_layer) > MAX_LEGEND:  # loc="best" tests every curve's points: seconds per figure at 400 layers
        kwargs.setdefault("loc", "upper right")
    ax.legend(handles, labels, **kwargs)


def subsample(n: int, most: int) -> np.ndarray:
    """At most `most` evenly spaced indices out of n, always keeping the first and the last."""
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(int))


def mark_at_bottom(ax: Any, xs: Any, where: Any, *, label: str, marker: str = "|", color: str = "red") -> None:
    """Ticks along the bottom edge at `xs[where]`: values a log axis cannot show (NaN/Inf, zeros), never hidden.

    Drawn in axes coordinates for y, so they show whatever the y scale; `gid="key"` keeps them in a
    per-layer legend that lists only a few layers.
    """
    where = np.asarray(where, dtype=bool)
    if where.any():
        ax.plot(np.asarray(xs)[where], np.zeros(int(where.sum())), marker, color=color, markersize=12 if marker == "|"
                else 7, linestyle="none", label=label, transform=ax.get_xaxis_transform(), gid="key", clip_on=False)


def positive(values: np.ndarray) -> np.ndarray:
    """`values` with zeros and negatives as NaN: they have no place on a log axis (left as gaps)."""
    out = np.array(values, dtype=float)
    out[~(out > 0)] = np.nan
    return out
