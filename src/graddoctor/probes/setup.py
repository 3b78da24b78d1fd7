"""What `watch` checks and stores before it attaches: inputs, the run's config, its environment."""

from __future__ import annotations

import platform
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import WatchConfig
from ..errors import ConfigError
from .select import LayerPlan


def unwrap(model: Any) -> nn.Module:
    """The module whose submodules get hooks: inside torch.compile, DDP or DataParallel wrappers."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"watch() takes a torch.nn.Module, got {type(model).__name__}. Pass the model itself.")
    while True:  # nested: torch.compile(DDP(model)), DDP(torch.compile(model))
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
            if not isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
                inner = None
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def check_inputs(model: nn.Module, plan: list[LayerPlan], optimizer: Any, config: WatchConfig) -> None:
    """Refuse, with what to do, a model or optimizer that cannot be watched."""
    if not any(layer.params for layer in plan):
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(
                f"{type(model).__name__} has no trainable parameters (none with requires_grad=True): "
                f"there is no gradient to watch. Unfreeze some parameters first."
            )
        if config.include or config.exclude:
            raise ConfigError(
                f"include={list(config.include)} / exclude={list(config.exclude)} leave no layer "
                f"with trainable parameters; layer names look like {_sample_names(model)}."
            )
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(
            f"optimizer must be a torch.optim.Optimizer (or None and call run.step()), got {type(optimizer).__name__}."
        )
    owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in owned for p in model.parameters() if p.requires_grad):
        raise ConfigError(
            f"the {type(optimizer).__name__} passed to watch() holds none of the model's trainable parameters: "
            f"steps could never be detected. Pass the optimizer built from this model's parameters."
        )


def run_config(
    model: nn.Module, optimizer: Any, config: WatchConfig, user_config: dict[str, Any] | None
) -> dict[str, Any]:
    """The run's config_json: watch options, model class, optimizer settings, the user's own."""
    out: dict[str, Any] = {"watch": config.to_dict(), "model": type(model).__name__}
    if optimizer is not None:
        out["optimizer"] = {
            "type": type(optimizer).__name__,
            "groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
        }
    if user_config:
        out["user"] = dict(user_config)
    return out


def environment(model: nn.Module) -> dict[str, Any]:
    """The run's env_json: versions and device, so a report can say where the numbers came from."""
    param = next(model.parameters(), None)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(param.device) if param is not None else "cpu",
        "cuda": torch.cuda.get_device_name(param.device) if param is not None and param.is_cuda else None,
        "n_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def _sample_names(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    return ", ".join(repr(n) for n in names[:5]) or "(none)"
