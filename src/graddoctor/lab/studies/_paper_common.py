"""Helpers shared by the paper studies: readings at initialization, fits, and small plots.

    at_init(record)                              # out_grad_norm at step 0 of every Linear, from the store
    capture(model, x, loss, is_linear)          # module outputs and dL/d(output), by autograd hooks
    growth(norms2, skip=(1, 1))                  # per-layer factor of a squared norm toward the input

matplotlib is imported inside the plotting functions (the `report` extra), never at import.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn


def at_init(record: Any, stat: str = "out_grad_norm", kind: str = "Linear", where: str = "") -> list[float]:
    """One recorded statistic at step 0 (before any update) of every layer of type `kind` whose name
    contains `where`, input side first, from a lab run (`graddoctor.lab.results.Record`)."""
    view = record.view()
    names = [info.name for info in view.layer_info if info.type == kind and where in info.name]
    return [float(view.stat(stat, name)[0]) for name in names]


@dataclasses.dataclass(frozen=True)
class Captured:
    """One module's output and the loss gradient with respect to it (both detached)."""

    name: str
    value: torch.Tensor
    grad: torch.Tensor


def capture(model: nn.Module, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor],
            select: Callable[[nn.Module], bool]) -> list[Captured]:
    """Run `loss(model(x))` backward once; return every selected module's output and its gradient.

    For tensors the store keeps only statistics of (e.g. histograms of dL/dh). Modules come in the
    order they ran (input side first); the parameters' .grad are reset to None afterwards.
    """
    values: list[tuple[str, torch.Tensor]] = []
    grads: dict[int, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args, out: torch.Tensor) -> None:
            index = len(values)
            values.append((name, out.detach()))
            if out.requires_grad:
                out.register_hook(lambda g: grads.__setitem__(index, g.detach()))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in model.named_modules() if select(m)]
    try:
        loss(model(x)).backward()
    finally:
        for h in handles:
            h.remove()
        for p in model.parameters():
            p.grad = None
    return [Captured(name, value, grads.get(i, torch.zeros_like(value))) for i, (name, value) in enumerate(values)]


def growth(norms2: Sequence[float], skip: tuple[int, int] = (0, 0)) -> float:
    """Per-layer factor by which a squared norm grows toward the input (index 0 = input side).

    exp(-slope) of the least-squares line through log norms2 against the layer index, after
    dropping `skip` = (first, last) layers (the ends of a chain are not at the stationary state).
    """
    y = np.log(np.asarray(norms2, dtype=float))[skip[0]: len(norms2) - skip[1]]
    if len(y) < 2 or not np.all(np.isfinite(y)):
        return math.nan
    return float(math.exp(-np.polyfit(np.arange(len(y)), y, 1)[0]))


def ratio(norms2: Sequence[float]) -> float:
    """||first|| / ||last|| from squared norms: the input-side layer's gradient over the output-side one's."""
    return math.sqrt(norms2[0] / norms2[-1]) if norms2[-1] > 0 else math.inf


def axes(width: float = 6.0, height: float = 3.6, ncols: int = 1) -> tuple[Any, Any]:
    """(figure, axes) on the non-interactive Agg backend; `ncols` > 1 gives an array of axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, ax[0] if ncols > 1 else ax[0][0]


def lines(ax: Any, xs: Sequence[float], series: dict[str, Sequence[float]], *, xlabel: str, ylabel: str,
          logy: bool = False, errors: dict[str, Sequence[float]] | None = None) -> Any:
    """One curve per entry of `series` (label: values), with optional error bars; returns `ax`."""
    for label, ys in series.items():
        err = (errors or {}).get(label)
        if err is not None:
            ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label=label)
        else:
            ax.plot(xs, ys, "o-", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
