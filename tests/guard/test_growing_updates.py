"""A run whose updates grow (a learning rate raised every step) is warned before its loss diverges."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_train import make, watched  # noqa: E402

from graddoctor.probes.guard import GuardWarning  # noqa: E402


def test_large_updates_warn_before_the_loss_diverges(store_path):
    model, batches = make()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    losses, warned_at = [], []
    with warnings.catch_warnings(record=True) as caught, watched(model, opt, store_path, "default"):
        warnings.simplefilter("always")
        for t in range(200):
            x, y = batches[t % len(batches)]
            loss = (model(x) - y).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            for g in opt.param_groups:
                g["lr"] *= 1.06
            losses.append(float(loss))
            warned_at += [t for w in caught if issubclass(w.category, GuardWarning) and "large_updates" in str(w.message)]
            caught.clear()
            if not math.isfinite(losses[-1]) or losses[-1] > 1e3 * losses[0]:
                break
    diverged = len(losses) - 1
    assert diverged < 199, "the schedule was meant to make the loss diverge"
    assert warned_at and warned_at[0] < diverged - 2, (warned_at, diverged, losses[-5:])
