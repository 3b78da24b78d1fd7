"""graddoctor.predict against out_grad_norm measured by graddoctor.watch on sampled models at init,
and the Prediction as data (repr, JSON)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graddoctor
from graddoctor import theory
from graddoctor.errors import ConfigError


def measured_log_norms(model: nn.Module, x: torch.Tensor, seed: int) -> dict[str, float]:
    """log ||dL/dh|| of every Linear/Conv from one watched step; loss = sum_b <r_b, y_b> / B."""
    r = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(seed + 100), dtype=x.dtype)
    with graddoctor.watch(model, update_ratio=False, hist_every=0) as run:
        ((model(x) * r).sum() / x.shape[0]).backward()
        run.step()
    view = graddoctor.load(run)
    return {i.name: math.log(view.stat("out_grad_norm", i.name)[0]) for i in view.layer_info if i.type in ("Linear", "Conv2d")}


def compare(build, shape: tuple[int, ...], seeds: int = 3, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds of measured and predicted log ||dL/dh_l|| - log ||dL/dh_last||."""
    measured, predicted = [], []
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = build().double()
        x = torch.randn(batch, *shape, dtype=torch.float64)
        logs = measured_log_norms(model, x, seed)
        p = graddoctor.predict(model, inputs=x)
        assert [lp.name for lp in p.layers] == list(logs)
        m = np.array(list(logs.values()))
        measured.append(m - m[-1])
        predicted.append(np.log([lp.rel_out_grad_norm for lp in p.layers]))
    return np.mean(measured, axis=0), np.mean(predicted, axis=0)


def mlp(act: type[nn.Module], depth: int = 8, width: int = 512, init: str = "default") -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if init == "he":
            nn.init.kaiming_normal_(layers[-1].weight, nonlinearity="relu")
            nn.init.zeros_(layers[-1].bias)
        if i < depth - 1:
            layers.append(act())
    return nn.Sequential(*layers)


@pytest.mark.parametrize("act, init", [(nn.Tanh, "default"), (nn.ReLU, "he"), (nn.Sigmoid, "default"), (nn.GELU, "he")])
def test_mlp_prediction_matches_watched_out_grad_norm(act, init):
    measured, predicted = compare(lambda: mlp(act, init=init), (512,))
    np.testing.assert_allclose(measured, predicted, atol=0.03 + 0.01 * abs(predicted[0]))


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.relu(self.fc1(x)))


class ResidualMLP(nn.Module):
    def __init__(self, width: int = 384, blocks: int = 5) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(width, width), nn.Linear(width, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.blocks(self.inp(x))))


def test_residual_blocks_accumulate_variance_and_gradient():
    """x + f(x): the stream's variance and ||dL/dx||^2 both grow by (1 + branch factor) per block."""
    measured, predicted = compare(ResidualMLP, (384,))
    np.testing.assert_allclose(measured, predicted, atol=0.04)
    assert predicted[0] > 1.0  # ||dL/dh|| at the input is ~3x the output's after 5 blocks: a real test


def test_dropout_scales_variance_and_gradient():
    """Inverted dropout p: E[x^2] and ||dL/dx||^2 both grow by 1/(1-p) (tanh is far from linear here)."""
    def build() -> nn.Module:
        layers: list[nn.Module] = []
        for _ in range(6):
            layers += [nn.Linear(384, 384), nn.Tanh(), nn.Dropout(0.3)]
        for m in layers[::3]:
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / 384))
        return nn.Sequential(*layers, nn.Linear(384, 384))

    measured, predicted = compare(build, (384,))
    np.testing.assert_allclose(measured, predicted, atol=0.04)


def test_layernorm_mlp_matches():
    def build() -> nn.Module:
        layers: list[nn.Module] = []
        for _ in range(6):
            layers += [nn.Linear(384, 384), nn.LayerNorm(384), nn.Tanh()]
        return nn.Sequential(*layers, nn.Linear(384, 384))

    measured, predicted = compare(build, (384,))
    np.testing.assert_allclose(measured, predicted, atol=0.04)


def test_batchnorm_mlp_matches_finite_batch_theory():
    def build() -> nn.Module:
        layers: list[nn.Module] = []
        for _ in range(8):
            layers += [nn.Linear(384, 384), nn.BatchNorm1d(384), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(384, 384))

    measured, predicted = compare(build, (384,), seeds=6, batch=16)
    np.testing.assert_allclose(measured, predicted, atol=0.05)
    assert predicted[0] > 1.0  # ||dL/dh||^2 grows ~1.6-fold per block toward the input at batch 16


def test_conv_net_with_circular_padding_matches():
    def build() -> nn.Module:
        layers: list[nn.Module] = [nn.Conv2d(3, 96, 3, padding=1, padding_mode="circular"), nn.Tanh()]
        for _ in range(4):
            layers += [nn.Conv2d(96, 96, 3, padding=1, padding_mode="circular"), nn.Tanh()]
        return nn.Sequential(*layers)

    measured, predicted = compare(build, (3, 8, 8), batch=16)
    np.testing.assert_allclose(measured, predicted, atol=0.04)


def test_conv_net_with_zero_padding_uses_the_mean_border_fraction():
    """On 8x8 images 16 % of 3x3 taps fall on the zero padding: ignoring it would be off by 0.09 per
    layer in log ||dL/dh||; averaging it over positions is within ~0.02 per layer."""
    def build() -> nn.Module:
        layers: list[nn.Module] = [nn.Conv2d(3, 96, 3, padding=1), nn.ReLU()]
        for _ in range(4):
            layers += [nn.Conv2d(96, 96, 3, padding=1), nn.ReLU()]
        return nn.Sequential(*layers)

    measured, predicted = compare(build, (3, 8, 8), batch=16)
    np.testing.assert_allclose(measured, predicted, atol=0.1)


# -- the Prediction as data -----------------------------------------------------------------------------


def test_prediction_repr_json_and_summary():
    p = theory.predict_mlp("tanh", 1.5, 0.05, 30)
    text = repr(p)
    assert "critical init at sigma_b^2 = 0.050: sigma_w^2 = 1.761" in text
    assert "ordered: gradients shrink toward the input" in text
    assert len(p.layers) == 30 and p.layers[-1].rel_out_grad_norm == 1.0 and p.layers[-1].factor is None
    data = json.loads(p.to_json())
    assert data["phase"] == "ordered" and data["covered"] is True
    assert data["summary"]["critical_sigma_w2"] == pytest.approx(1.761, abs=1e-3)
    critical = json.loads(theory.predict_mlp("relu", 2.0, 0.0, 10).to_json())
    assert critical["summary"]["scales"]["xi_c"] == "inf" and critical["phase"] == "critical"


def test_finite_depth_differs_from_the_fixed_point():
    """GELU with He init: chi_1 at q* = 0 is 0.5, but along the trajectory from q = 2 the factor
    over the first 10 layers is ~0.94 (issue 4)."""
    p = theory.predict_mlp("gelu", 2.0, 0.0, 11)
    assert p.summary.scales.chi1 == pytest.approx(0.5)
    assert 0.9 < p.mean_factor < 0.97


def test_input_statistics_start_the_trajectory():
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64))
    x = 3.0 * torch.randn(256, 64)
    p = graddoctor.predict(model, inputs=x)
    assert p.input_q == pytest.approx(9.0, rel=0.05)
    sigma_w2 = 64 * float(model[0].weight.detach().double().pow(2).mean())
    assert p.layers[0].q == pytest.approx(sigma_w2 * p.input_q + p.layers[0].sigma_b2, rel=1e-9)


def test_uncovered_parts_are_named_and_nothing_is_predicted_past_them():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Mish(), nn.Linear(32, 4))
    p = graddoctor.predict(model)
    assert not p.covered
    assert [u[:2] for u in p.uncovered] == [("3", "Mish")]
    assert [lp.name for lp in p.layers] == ["0", "2"]
    assert "not covered" in repr(p) and "1 Linear/Conv layer(s) past the uncovered parts" in repr(p)


def test_batch_below_five_with_batchnorm_is_a_clear_error():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ConfigError, match="batch size >= 5"):
        graddoctor.predict(model, batch=4)
    assert graddoctor.predict(nn.Sequential(nn.Linear(8, 8)), batch=2).layers  # no BatchNorm: batch unused


def test_import_graddoctor_stays_light():
    code = "import sys, graddoctor; print(sorted(m for m in ('scipy', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
