"""What every claim shares: the `Claim` record, the common training budgets, and readers of per-layer numbers."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from ...diagnosis.families import depth_layers
from ..results import Results, mean_spread
from ...train.spec import TrainSpec
from ..study import Settings

WIDTH = 128


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the article: its runs, its judge (numbers -> verdict, by `rule`) and its figure.

    judge(results, settings) returns (verdict, numbers, summary, figure_data); figure(figure_data)
    returns (matplotlib Figure, caption).
    """

    id: str
    text: str          # the article's claim in one line
    rule: str          # how the verdict follows from the numbers, in words (the code in judge does exactly this)
    runs: Callable[[Settings], list]
    judge: Callable[[Results, Settings], tuple[str, dict[str, Any], str, dict[str, Any]]]
    figure: Callable[[dict[str, Any]], tuple[Any, str]]


EVERY = 5  # trained runs record one step in 5 (the per-step losses are kept by the trainer): 5x less watching


def steps(settings: Settings) -> int:
    """The training budget of every trained run: 300 steps of 64 samples (quick: 100)."""
    return 100 if settings.quick else 300


def sgd(settings: Settings, lr: float = 0.05, **kw: Any) -> TrainSpec:
    """SGD with momentum 0.9, batch 64, the common budget."""
    return TrainSpec(optimizer="sgd", lr=lr, momentum=0.9, steps=steps(settings), every=EVERY, **kw)


def adam(settings: Settings, lr: float = 1e-3) -> TrainSpec:
    return TrainSpec(optimizer="adam", lr=lr, steps=steps(settings), every=EVERY)


AT_INIT = TrainSpec(steps=1)  # one step: the gradients recorded at step 0 are those of the initial weights


def weight_layers(view: Any) -> list[str]:
    """The depth profile's layers (diagnosis.families.depth_layers), by the role stored with each."""
    return [view.layer_info[i].name for i in depth_layers(view)]


def act_layers(view: Any) -> list[str]:
    return [info.name for info in view.layer_info if info.kind == "activation" and "dead_frac" in view.stats
            and np.isfinite(view.stat("dead_frac", info.name)).any()]


def profile(view: Any, stat: str = "out_grad_norm", step: int = 0, layers: list[str] | None = None) -> np.ndarray:
    """One statistic per weight layer (input side first) at the `step`-th recorded step (-1: the last)."""
    return np.array([view.stat(stat, name)[step] for name in (layers or weight_layers(view))], dtype=float)


def first_last(view: Any, step: int = 0) -> float:
    """||dL/dh|| of the first weight layer over the last one's: < 1 vanishing toward the input, > 1 exploding."""
    g = profile(view, step=step)
    return float(g[0] / g[-1]) if g[-1] > 0 else math.nan


def log10_spread(values: Any) -> dict[str, Any]:
    """mean ± std of log10(values) over seeds, and the geometric mean (a ratio spans decades)."""
    arr = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = mean_spread(np.log10(arr))
    s["geomean"] = None if s["mean"] is None else float(10 ** s["mean"])
    return s


def geo_profile(views: list[Any], stat: str = "out_grad_norm", step: int = 0) -> list[float]:
    """Geometric mean over seeds of a per-weight-layer profile (zeros stay 0)."""
    rows = np.array([profile(v, stat, step) for v in views])
    with np.errstate(divide="ignore"):
        logs = np.log(rows)
    out = np.exp(logs.mean(0))
    out[(rows == 0).any(0)] = 0.0
    return [float(v) for v in out]


def mean_curve(records: list[Any], key: str = "losses", every: int = 1) -> list[float | None]:
    """Mean over seeds of a per-step metric list (None/NaN where any seed is not finite), every `every`-th step."""
    arr = np.array([[math.nan if v is None else v for v in r.metrics[key]] for r in records], dtype=float)
    mean = arr.mean(0)[::every]
    return [float(v) if math.isfinite(v) else None for v in mean]


def pm(s: dict[str, Any], digits: int = 2) -> str:
    """'0.93 ± 0.01' for a mean_spread."""
    if s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def decades(s: dict[str, Any]) -> str:
    """'10^-7.4 ± 0.3' for a log10_spread."""
    if s.get("mean") is None:
        return "n/a"
    return f"10^{s['mean']:.1f} ± {s['std']:.1f}"


def axes(ncols: int = 1, width: float = 7.5) -> tuple[Any, list[Any]]:
    """A Figure (Agg canvas, not pyplot's) with `ncols` Axes side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width if ncols == 1 else 5.2 * ncols, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]


def verdict_of(supported: bool, refuted: bool) -> str:
    """'supported' / 'refuted' / 'qualified' (neither condition: qualified)."""
    return "supported" if supported else "refuted" if refuted else "qualified"


def bars(ax: Any, values: dict[str, list[float]], *, ylabel: str, title: str, colors: list[str]) -> None:
    """Mean ± std bars ({label: [mean, std]}) on a 0-1 axis, labels split at '/' onto two lines."""
    names = list(values)
    ax.bar(range(len(names)), [values[n][0] or 0.0 for n in names], yerr=[values[n][1] or 0.0 for n in names], color=colors)
    ax.set_xticks(range(len(names)), [n.replace("/", "\n") for n in names], fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
