"""Finite-batch BatchNorm theory (Yang et al. 2019): sphere marginals, the infinite-batch limit,
and Monte-Carlo against deep Linear-BatchNorm-activation networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graddoctor.errors import ConfigError
from graddoctor.theory import batchnorm as bn
from graddoctor.theory.activations import from_name


@pytest.mark.parametrize("batch", [5, 8, 64, 512])
def test_sphere_marginals_have_unit_variance_and_sum_to_zero(batch):
    """h_hat = sqrt(B) P h / ||P h||: E[h1^2] = 1 and E[h1 h2] = -1/(B-1) because sum_i h_i = 0."""
    m = bn.sphere_moments(from_name("identity"), batch)
    assert m.p2 == pytest.approx(1.0, rel=1e-9)
    assert m.p11 == pytest.approx(-1 / (batch - 1), rel=1e-7)
    assert m.mh11 == pytest.approx(m.p11, rel=1e-7)


def test_sphere_moments_match_sampling_the_batchnorm_output():
    batch = 6
    rng = np.random.default_rng(0)
    h = rng.standard_normal((200_000, batch))
    h = (h - h.mean(1, keepdims=True)) / h.std(1, keepdims=True)
    tanh = from_name("tanh")
    m = bn.sphere_moments(tanh, batch)
    d = tanh.deriv(h)
    for value, samples in [(m.p2, tanh.fn(h[:, 0]) ** 2), (m.p11, tanh.fn(h[:, 0]) * tanh.fn(h[:, 1])),
                           (m.m11, d[:, 0] * d[:, 1]), (m.mh11, d[:, 0] * h[:, 0] * d[:, 1] * h[:, 1])]:
        assert abs(value - samples.mean()) < 5 * samples.std() / math.sqrt(samples.size)


def test_relu_growth_tends_to_pi_over_pi_minus_one():
    limit = math.pi / (math.pi - 1)
    assert bn.growth(from_name("relu"), None) == pytest.approx(limit, rel=1e-12)
    finite = [bn.growth(from_name("relu"), b) for b in (8, 32, 256, 4096)]
    assert all(a > b > limit for a, b in zip(finite, finite[1:]))
    assert finite[-1] == pytest.approx(limit, rel=1e-3)


def test_folded_affine_is_phi_of_gain_x_plus_shift():
    act = bn.folded(from_name("relu"), 2.0, 0.5)
    x = np.linspace(-2, 2, 9)
    np.testing.assert_allclose(act(x), np.maximum(2 * x + 0.5, 0))
    assert act.kinks == (-0.25,)


@pytest.mark.parametrize("batch", [4, 2.5, 0])
def test_batch_below_five_is_a_clear_error(batch):
    with pytest.raises(ConfigError, match="batch size >= 5"):
        bn.growth(from_name("relu"), batch)


def test_constant_input_has_nothing_to_normalise():
    with pytest.raises(ConfigError, match="no variance"):
        bn.backward_factor(bn.sphere_moments(from_name("relu"), 8), 0.0)


def measured_growth(act, batch: int, width: int = 768, depth: int = 14, seeds: int = 3) -> float:
    """Geometric-mean per-layer growth of ||dL/dh||^2 over the middle layers of random Linear-BN-act nets."""
    logs = []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        y = torch.randn(batch, width, generator=g, dtype=torch.float64).requires_grad_()
        hs = []
        for _ in range(depth):
            h = y @ (torch.randn(width, width, generator=g).double() * math.sqrt(2 / width)).T
            h.retain_grad()
            hs.append(h)
            y = act((h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5))
        (y * torch.randn(batch, width, generator=g, dtype=torch.float64)).sum().backward()
        n = np.array([float(h.grad.pow(2).sum()) for h in hs])
        logs.append(np.mean(np.log(n[2:-3] / n[3:-2])))
    return math.exp(np.mean(logs))


@pytest.mark.parametrize("name, batch", [("relu", 8), ("relu", 32), ("tanh", 16)])
def test_growth_matches_sampled_batchnorm_networks(name, batch):
    """Theory at B = 8 is 1.79 against 1.47 at B -> infinity: the finite-batch terms are measurable."""
    fn = {"relu": torch.relu, "tanh": torch.tanh}[name]
    assert measured_growth(fn, batch) == pytest.approx(bn.growth(from_name(name), batch), rel=0.02)
