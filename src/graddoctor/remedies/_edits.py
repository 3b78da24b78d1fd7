"""Shared pieces of model surgery: the `Edit`/`Surgery` results, `RemedyError`, and helpers.

The helpers copy the model, replace or find children, guess an example input and run one dry forward.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .. import theory
from ..errors import ConfigError

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


class RemedyError(ConfigError):
    """A remedy that cannot be applied safely to this model, or an id that is not a model change."""


@dataclasses.dataclass(frozen=True)
class Edit:
    """One change made to the model: `layer` is its name in the edited model."""

    layer: str
    action: str
    detail: str

    def __str__(self) -> str:
        return f"{self.layer or '<model>'}: {self.action} ({self.detail})"


@dataclasses.dataclass(frozen=True)
class Surgery:
    """The edited model and every edit made to it, in order."""

    model: nn.Module = dataclasses.field(repr=False)
    edits: tuple[Edit, ...]

    def __str__(self) -> str:
        lines = [f"{len(self.edits)} edit(s) to {type(self.model).__name__}:"]
        return "\n".join(lines + [f"  {edit}" for edit in self.edits])


# -- helpers -------------------------------------------------------------------------------------


def _target(model: Any, inplace: bool) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise RemedyError(f"surgery works on an nn.Module, got {type(model).__name__}.")
    return model if inplace else copy.deepcopy(model)


def _set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent), child, new)


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear/Conv layers in definition order, each once (a module registered twice counts once)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def _dominant_activation(model: nn.Module) -> nn.Module | None:
    """The most common known activation module of `model` (ties: the first defined), or None."""
    found = [(m, theory.activations.from_module(m)) for m in model.modules() if not isinstance(m, nn.Identity)]
    known = [(m, act.name) for m, act in found if act is not None]
    if not known:
        return None
    top = Counter(name for _, name in known).most_common(1)[0][0]
    return next(m for m, name in known if name == top)


def _example_input(model: nn.Module) -> torch.Tensor | None:
    """4 random inputs shaped for the model's first weight layer, when it can be read. Drawn from a
    private generator: surgery does not move the caller's RNG stream."""
    first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
    param = next(model.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(0)
    if isinstance(first, nn.Embedding):
        return torch.randint(0, first.num_embeddings, (4, 8), generator=gen).to(device)
    if isinstance(first, nn.Linear):
        return torch.randn(4, first.in_features, generator=gen, dtype=dtype).to(device)
    if isinstance(first, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(first)]
        return torch.randn(4, first.in_channels, *[32] * dims, generator=gen, dtype=dtype).to(device)
    return None


@torch.no_grad()
def _dry_forward(model: nn.Module, x: Any, hooks: Iterable[tuple[nn.Module, Callable[..., None]]] = ()) -> Any:
    """One forward in eval mode (no BatchNorm statistics updated), with temporary forward hooks
    (module, fn) that are removed again, and training flags restored, whatever happens."""
    modes = {m: m.training for m in model.modules()}
    handles = [module.register_forward_hook(fn) for module, fn in hooks]
    try:
        model.eval()
        return model(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode


def _rebuild(seq: nn.Sequential, items: list[tuple[str | None, nn.Module]]) -> None:
    """Refill `seq` with `items` (old key, or None for a new module).

    Digit keys (plain Sequentials) are renumbered; named keys are kept, new modules get `<prev>_norm`.
    """
    numbered = all(key.isdigit() for key in seq._modules)
    seq._modules.clear()
    prev = ""
    for i, (key, module) in enumerate(items):
        prev = str(i) if numbered else (key if key is not None else f"{prev}_norm")
        seq._modules[prev] = module


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key



def _names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}
