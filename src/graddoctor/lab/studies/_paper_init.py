"""At-initialization measurements shared by the paper studies: one forward and backward pass, with
the output of chosen modules and dL/d(that output) captured by plain autograd hooks.

    caps = capture(model, x, projection_loss, lambda m: isinstance(m, nn.Linear))
    growth([c.grad_norm2 for c in caps])       # per-layer factor of ||dL/dh||^2 toward the input

The loss is a fixed random projection of the output, L = sum_b <r_b, y_b> / B with r_b ~ N(0, 1)
drawn once per sample from a seeded generator: a per-sample loss whose gradient at the output is
the same random vector whatever the output's size, as the mean-field theory assumes (a loss on
the output's value would tie the gradient to how large the output is, which init changes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class Captured:
    """One module's output at init and the loss gradient with respect to it (both detached)."""

    name: str
    value: torch.Tensor
    grad: torch.Tensor

    @property
    def grad_norm2(self) -> float:
        """||dL/d output||^2 summed over the batch."""
        return float(self.grad.double().pow(2).sum())


def projection_loss(out: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """sum_b <r_b, out_b> / B with r fixed by `seed` (see the module docstring)."""
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return (out * r).sum() / out.shape[0]


def capture(model: nn.Module, x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor],
            select: Callable[[nn.Module], bool]) -> list[Captured]:
    """Run `loss(model(x))` backward once; return every selected module's output and its gradient.

    Modules come in the order they ran (input side first). The model's parameter gradients are
    left as they were before the call (zeroed afterwards if they were None).
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
    """Per-layer factor by which a squared norm grows toward the input (layer 0 = input side).

    exp(-slope) of the least-squares line through log norms2 against the layer index, after
    dropping `skip` = (first, last) layers (the ends of a chain are not at the stationary state).
    """
    y = np.log(np.asarray(norms2, dtype=float))[skip[0]: len(norms2) - skip[1]]
    if len(y) < 2 or not np.all(np.isfinite(y)):
        return math.nan
    return float(math.exp(-np.polyfit(np.arange(len(y)), y, 1)[0]))


def ratio(norms2: Sequence[float]) -> float:
    """||first|| / ||last||: the gradient norm at the input-side layer over the output-side one."""
    return math.sqrt(norms2[0] / norms2[-1]) if norms2[-1] > 0 else math.inf


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard deviation over seeds); the deviation is 0 for a single value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def at_init(record: Any, stat: str = "out_grad_norm", kind: str = "Linear", where: str = "") -> list[float]:
    """One recorded statistic at step 0 (before any update) of every layer of type `kind` whose name
    contains `where`, input side first, from a lab run (`graddoctor.lab.results.Record`)."""
    view = record.view()
    names = [info.name for info in view.layer_info if info.type == kind and where in info.name]
    return [float(view.stat(stat, name)[0]) for name in names]
