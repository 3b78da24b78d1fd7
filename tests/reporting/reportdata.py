"""Data shared by the report tests: XSS-shaped names, an MLP that uses one, a watched training loop."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

import graddoctor

EVIL = "<img src=x onerror=alert(1)>"
EVIL_SCRIPT = "<script>alert(2)</script>"


def evil_mlp(depth: int = 4, width: int = 16) -> nn.Sequential:
    """A sigmoid MLP whose first layer is named like an XSS payload."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers[EVIL] = nn.Linear(8, width)
    for k in range(depth - 1):
        layers[f"act{k}"] = nn.Sigmoid()
        layers[f"fc{k + 1}"] = nn.Linear(width, width if k < depth - 2 else 1)
    return nn.Sequential(layers)


def train(store: Path, name: str, model: nn.Module, steps: int = 30) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(1)
    config = {"note": EVIL_SCRIPT, "lr": 0.5}
    with graddoctor.watch(model, opt, store=store, name=name, every=1, hist_every=10, user_config=config) as run:
        for _ in range(steps):
            x, y = torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss, **{EVIL_SCRIPT: loss.detach() * 2})
