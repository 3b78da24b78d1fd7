"""A tiny seeded regression training shared by the guard tests (data made here, nothing downloaded)."""

from __future__ import annotations

import torch

from graddoctor.config import WatchConfig
from graddoctor.probes.monitor import Run


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 1))
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(32, 6, generator=g), torch.randn(32, 1, generator=g)) for _ in range(12)]
    return model, batches


def step(model, opt, x, y, *, poison: bool = False) -> torch.Tensor:
    loss = (model(x) - y).pow(2).mean()
    if poison:
        loss = loss * float("nan")
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def watched(model, opt, store, guard, *, every: int = 1, name: str = "t") -> Run:
    # the full tier at every recorded step: the triggers on update_ratio and activations read it
    return Run(model, opt, store=str(store), name=name, config=WatchConfig(every=every, full_every=every), guard=guard).attach()
