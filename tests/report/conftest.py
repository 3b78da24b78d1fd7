"""Fixtures of the report tests: a small real store (trained once per session) and hand-made runs."""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "diagnose"))  # fakes.py: hand-made RunViews

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
    with graddoctor.watch(model, opt, store=store, name=name, every=1, hist_every=10, config=config) as run:
        for _ in range(steps):
            x, y = torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss, **{EVIL_SCRIPT: loss.detach() * 2})


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """A store with two runs: an evil-named sigmoid MLP and a ReLU MLP called 'relu'."""
    path = tmp_path_factory.mktemp("report") / "runs.db"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            train(path, EVIL_SCRIPT + "run", evil_mlp())
            model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
            train(path, "relu", model)
    finally:
        torch.set_num_threads(before)
    return path


@pytest.fixture(scope="session")
def run(store):
    return graddoctor.load(store, name=EVIL_SCRIPT + "run")


@pytest.fixture
def fake():
    """A hand-made 5-Linear sigmoid-like MLP over 20 steps whose out_grad_norm shrinks 0.3x per layer."""
    from fakes import fake_run, mlp_layers, profile_stats

    stats = profile_stats(5, 0.3, steps=20)
    acts = [n for n, t, _ in mlp_layers(5) if t != "Linear"]
    stats["saturated_frac"] = {n: np.linspace(0, 0.5, 20) for n in acts}
    return fake_run(mlp_layers(5), stats, steps=20, scalars={"loss": np.linspace(2, 0.1, 20)})
