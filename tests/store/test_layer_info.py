"""Layer metadata, logged-scalar masks and zero-initialised layers, as read back from the store."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor


def _train(model, steps, store, losses=None, **options):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=store, name="r", **options) as run:
        for k in range(steps):
            loss = (model(torch.randn(8, 4)) - 1).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if losses is None or losses[k] is not None:
                run.log(loss=loss if losses is None else losses[k])
    return graddoctor.load(store, name="r")


def test_param_shapes_are_stored_per_layer(store_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2, bias=False))
    r = _train(model, 1, store_path)
    info = {i.name: i for i in r.layer_info}
    assert info["0"].param_shapes == {"weight": [6, 4], "bias": [6]}
    assert info["2"].param_shapes == {"weight": [2, 6]}
    assert info["1"].param_shapes == {} and info["1"].kind == "activation"


@pytest.mark.parametrize("mode, stat", [("sample", "update_ratio_est"), ("exact", "update_ratio")])
def test_update_ratio_is_not_recorded_for_all_zero_weights(store_path, mode, stat):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    r = _train(model, 2, store_path, update_ratio=mode)
    assert not r.recorded(stat)[2, 0]   # ||w|| = 0: undefined, not +inf
    assert r.recorded(stat)[2, 1]       # the head has moved by step 1
    assert math.isfinite(r.stat(stat, "2")[1])
    assert r.first_nonfinite is None


def test_scalar_recorded_tells_a_nan_loss_from_an_unlogged_step(store_path):
    model = nn.Sequential(nn.Linear(4, 2))
    r = _train(model, 3, store_path, losses=[1.0, float("nan"), None])
    assert r.scalar_recorded("loss").tolist() == [True, True, False]
    loss = r.scalar("loss")
    assert loss[0] == 1.0 and np.isnan(loss[1]) and np.isnan(loss[2])


def test_resume_with_other_layers_appends_them_after_the_stored_ones(store_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def steps(run, n):
        for _ in range(n):
            loss = (model(torch.randn(8, 4)) - 1).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    with graddoctor.watch(model, opt, store=store_path, name="r", include=["0", "1"]) as run:
        steps(run, 2)
    with graddoctor.watch(model, opt, store=store_path, name="r", include=["1", "2"], resume=True) as run:
        steps(run, 2)
    r = graddoctor.load(store_path, name="r")
    assert r.layers == ["0", "1", "2"] and r.steps.tolist() == [0, 1, 2, 3]
    assert r.recorded("grad_norm")[0].tolist() == [True, True, False, False]   # '0' only before
    assert r.recorded("grad_norm")[2].tolist() == [False, False, True, True]   # '2' only after
    assert r.recorded("dead_frac")[1].all()
