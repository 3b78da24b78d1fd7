"""Fixtures of the report tests: a small real store (trained once per session) and hand-made runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "diagnosis"))  # fakes.py: hand-made RunViews

from reportdata import EVIL_SCRIPT, evil_mlp, train  # noqa: E402


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
