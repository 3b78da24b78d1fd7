"""Mean-field recursions: reference values of the literature, fixed-point cases, depth scales, and
Monte-Carlo checks against sampled wide random networks (seeded, float64, width 1500)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graddoctor import theory
from graddoctor.errors import ConfigError
from graddoctor.theory import activations as A

# -- reference values (issue 4) ---------------------------------------------------------------------


def test_tanh_without_bias_is_critical_at_sigma_w2_one():
    assert theory.critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-9)
    assert theory.chi1("tanh", 1.0, 0.0) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("sigma_w2, sigma_b2", [(0.5, 0.0), (1 / 3, 0.01), (2.0, 0.0), (2.0, 0.3), (3.0, 0.1)])
def test_relu_chi1_is_half_sigma_w2(sigma_w2, sigma_b2):
    assert theory.chi1("relu", sigma_w2, sigma_b2) == pytest.approx(sigma_w2 / 2, rel=1e-12)


@pytest.mark.parametrize("a", [0.01, 0.2, 0.5])
def test_leaky_relu_chi1_is_sigma_w2_times_one_plus_a2_over_2(a):
    assert theory.chi1(f"leaky_relu:{a}", 1.7, 0.05) == pytest.approx(1.7 * (1 + a * a) / 2, rel=1e-12)
    assert theory.critical_sigma_w2(f"leaky_relu:{a}", 0.0) == pytest.approx(2 / (1 + a * a), rel=1e-9)


def test_sigmoid_chi1_at_unit_weights_no_bias():
    assert theory.chi1("sigmoid", 1.0, 0.0) == pytest.approx(0.0557, abs=5e-5)


def test_tanh_order_to_chaos_line_at_bias_variance_005():
    assert theory.critical_sigma_w2("tanh", 0.05) == pytest.approx(1.76, abs=0.005)
    assert theory.chi1("tanh", theory.critical_sigma_w2("tanh", 0.05), 0.05) == pytest.approx(1.0, abs=1e-9)


def test_pytorch_default_init_relu_chi1_is_one_sixth():
    assert theory.chi1("relu", 1 / 3, 1 / (3 * 512)) == pytest.approx(1 / 6)


# -- fixed points ------------------------------------------------------------------------------------


@pytest.mark.parametrize("act, sw2, sb2, kind", [
    ("tanh", 0.9, 0.0, "zero"), ("tanh", 1.0, 0.0, "zero"), ("gelu", 2.0, 0.0, "zero"),
    ("relu", 2.0, 0.0, "marginal"), ("identity", 1.0, 0.0, "marginal"),
    ("relu", 3.0, 0.0, "infinite"), ("relu", 2.0, 0.1, "infinite"), ("identity", 1.2, 0.0, "infinite"),
    ("tanh", 1.5, 0.05, "finite"), ("tanh", 1.2, 0.0, "finite"), ("sigmoid", 1.0, 0.0, "finite"),
    ("selu", 1.0, 0.0, "finite"), ("relu", 1.0, 0.1, "finite"),
])
def test_fixed_point_kinds(act, sw2, sb2, kind):
    point = theory.fixed_point(act, sw2, sb2)
    assert point.kind == kind
    if kind == "finite":
        assert float(theory.length_map(act, sw2, sb2, point.q)) == pytest.approx(point.q, rel=1e-10)
        assert point.slope < 1


def test_relu_fixed_point_closed_form_and_selu_self_normalises():
    assert theory.fixed_point("relu", 1.0, 0.1).q == pytest.approx(0.1 / (1 - 0.5), rel=1e-10)
    assert theory.fixed_point("selu", 1.0, 0.0).q == pytest.approx(1.0, abs=1e-6)   # Klambauer et al. 2017


def test_fixed_point_slope_is_the_convergence_rate_of_the_iterated_map():
    """xi_q = -1/log(slope): iterate the length map and watch |q - q*| shrink by `slope` per layer."""
    point = theory.fixed_point("tanh", 1.5, 0.05)
    q, gaps = point.q * 1.05, []
    for _ in range(8):
        q = float(theory.length_map("tanh", 1.5, 0.05, q))
        gaps.append(q - point.q)
    assert gaps[-1] / gaps[-2] == pytest.approx(point.slope, rel=1e-3)
    assert theory.depth_scales("tanh", 1.5, 0.05).xi_q == pytest.approx(-1 / math.log(point.slope))


# -- correlations, phases, depth scales ----------------------------------------------------------------


def test_chaotic_tanh_has_a_stable_correlation_below_one_and_chi_c_is_the_map_slope():
    sw2, sb2 = 3.0, 0.05
    c_star, chi_c = theory.fixed_correlation("tanh", sw2, sb2)
    assert 0 < c_star < 1
    assert theory.correlation_map("tanh", sw2, sb2, c_star) == pytest.approx(c_star, abs=1e-10)
    h = 1e-5
    slope = (theory.correlation_map("tanh", sw2, sb2, c_star + h) - theory.correlation_map("tanh", sw2, sb2, c_star - h)) / (2 * h)
    assert chi_c == pytest.approx(slope, rel=1e-5)
    assert chi_c < 1 < theory.chi1("tanh", sw2, sb2)


def test_odd_activation_without_bias_decorrelates_to_zero_in_the_chaotic_phase():
    c_star, _ = theory.fixed_correlation("tanh", 2.0, 0.0)
    assert c_star == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("act, sw2, sb2, phase", [
    ("tanh", 0.5, 0.05, "ordered"), ("tanh", 3.0, 0.05, "chaotic"), ("relu", 2.0, 0.0, "critical"),
    ("relu", 1 / 3, 0.0, "ordered"), ("selu", 2.0, 0.0, "chaotic"), ("sigmoid", 1 / 3, 0.0, "ordered"),
])
def test_phases(act, sw2, sb2, phase):
    assert theory.depth_scales(act, sw2, sb2).phase == phase


def test_depth_scales_ordered_critical_and_infinite():
    ordered = theory.depth_scales("tanh", 1.5, 0.05)
    assert ordered.c_star == 1.0 and ordered.chi_c == pytest.approx(ordered.chi1)
    assert ordered.xi_c == pytest.approx(-1 / math.log(ordered.chi1)) == pytest.approx(ordered.xi_grad)
    assert ordered.trainable_depth == pytest.approx(6 * ordered.xi_c)
    critical = theory.depth_scales("relu", 2.0, 0.0)
    assert critical.xi_c == critical.xi_grad == critical.trainable_depth == math.inf
    exploding = theory.depth_scales("relu", 3.0, 0.0)
    assert exploding.xi_grad == pytest.approx(-1 / math.log(1.5))
    assert exploding.xi_c is None and exploding.trainable_depth is None and exploding.q_star == math.inf
    assert theory.depth_scales("tanh", 3.0, 0.05).trainable_depth < theory.depth_scales("tanh", 2.0, 0.05).trainable_depth


def test_no_critical_sigma_w2_is_a_clear_error():
    flat = A.Activation("constant", lambda x: np.ones_like(x), lambda x: np.zeros_like(x))
    with pytest.raises(ConfigError, match="never crosses 1"):
        theory.critical_sigma_w2(flat, 0.0)


@pytest.mark.parametrize("sw2, sb2", [(0.0, 0.0), (-1.0, 0.0), (1.0, -0.1), (float("nan"), 0.0), ("2", 0.0)])
def test_bad_sigmas_raise_config_error(sw2, sb2):
    with pytest.raises(ConfigError, match="sigma"):
        theory.chi1("tanh", sw2, sb2)


# -- Monte-Carlo: wide random networks ------------------------------------------------------------------

MODULES = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "selu": torch.selu,
           "gelu": torch.nn.functional.gelu, "erf": torch.erf, "softplus:1": torch.nn.functional.softplus}


CASES = [("tanh", 1.5, 0.05), ("tanh", 3.0, 0.0), ("relu", 2.0, 0.0), ("sigmoid", 4.0, 0.1), ("selu", 1.0, 0.0),
         ("gelu", 2.0, 0.0), ("erf", 1.0, 0.02), ("softplus:1", 1.0, 0.0)]


@pytest.mark.parametrize("act, sw2, sb2", CASES)
def test_one_wide_layer_matches_length_map_and_chi1(act, sw2, sb2):
    """Gaussian pre-activations of variance q through phi and a random 800-wide layer (16 draws of
    W, 16 samples each): forward E[h'^2] is the length map, backward ||dL/dh||^2 / ||dL/dh'||^2 is
    chi_1 at q. Several draws of W: phi's mean component is shared by all samples of one draw."""
    q, draws, batch, width = 1.3, 16, 16, 800
    g = torch.Generator().manual_seed(3)
    forward, backward = [], []
    for _ in range(draws):
        h = (math.sqrt(q) * torch.randn(batch, width, generator=g, dtype=torch.float64)).requires_grad_()
        w = torch.randn(width, width, generator=g).double() * math.sqrt(sw2 / width)
        b = torch.randn(width, generator=g, dtype=torch.float64) * math.sqrt(sb2)
        out = MODULES[act](h) @ w.T + b
        upstream = torch.randn(batch, width, generator=g, dtype=torch.float64)
        (out * upstream).sum().backward()
        forward.append(float(out.detach().pow(2).mean()))
        backward.append(float(h.grad.pow(2).sum() / upstream.pow(2).sum()))
    assert np.mean(forward) == pytest.approx(float(theory.length_map(act, sw2, sb2, q)), rel=0.03)
    assert np.mean(backward) == pytest.approx(theory.chi1(act, sw2, sb2, q=q), rel=0.015)


def sample_network(act: str, sw2: float, sb2: float, depth: int, seed: int, width: int = 1000, batch: int = 32):
    """Per-layer E[h^2] and ||dL/dh||^2 of one random MLP, loss = sum_b <r_b, h_last_b>."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(batch, width, generator=g, dtype=torch.float64).requires_grad_()
    hs = []
    for _ in range(depth):
        w = torch.randn(width, width, generator=g).double() * math.sqrt(sw2 / width)
        b = torch.randn(width, generator=g, dtype=torch.float64) * math.sqrt(sb2)
        h = y @ w.T + b
        h.retain_grad()
        hs.append(h)
        y = MODULES[act](h)
    (hs[-1] * torch.randn(batch, width, generator=g, dtype=torch.float64)).sum().backward()
    return np.array([float(h.detach().pow(2).mean()) for h in hs]), np.array([float(h.grad.pow(2).sum()) for h in hs])


@pytest.mark.parametrize("act, sw2, sb2", [("tanh", 1.5, 0.05), ("relu", 2.0, 0.0), ("gelu", 2.0, 0.0), ("sigmoid", 4.0, 0.1)])
def test_finite_depth_trajectory_matches_sampled_deep_networks(act, sw2, sb2):
    """q^l from the input's q^0 = 1, layer by layer, and the gradient factors along it (GELU with He
    init drifts from q = 2 toward q* = 0: chi_1 0.98 -> 0.95 here, not 0.5 as at q*).

    The samples of one network share its weights, so E[h^2] of one network wanders by ~sqrt(2/width)
    per layer (for ReLU with He init it is a martingale: only the mean over networks is 2). Hence
    geometric means over 8 networks and tolerances of a few standard errors.
    """
    depth, seeds = 6, 8
    runs = [sample_network(act, sw2, sb2, depth, seed, width=800) for seed in range(seeds)]
    log_q = np.array([np.log(q) for q, _ in runs])
    log_ratio = np.array([np.log(gr[:-1] / gr[1:]) for _, gr in runs])
    q = [sw2 * 1.0 + sb2]
    for _ in range(depth - 1):
        q.append(float(theory.length_map(act, sw2, sb2, q[-1])))
    factors = [theory.chi1(act, sw2, sb2, q=ql) for ql in q[:-1]]
    if act != "relu":
        np.testing.assert_allclose(log_q.mean(0), np.log(q), atol=0.06)
    np.testing.assert_allclose(log_ratio.mean(0), np.log(factors), atol=0.025)
    assert log_ratio.sum(1).mean() == pytest.approx(np.log(factors).sum(), abs=0.05)


@pytest.mark.parametrize("act, c0", [("tanh", 0.3), ("relu", -0.4), ("erf", 0.8), ("gelu", 0.5)])
def test_correlation_map_matches_sampled_wide_layer(act, c0):
    """Pairs of inputs with correlation c0 through one wide random layer: the output correlation."""
    sw2, sb2, width, pairs = 1.5, 0.1, 4000, 16
    q = 1.2
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, pairs, width, generator=g, dtype=torch.float64)
    h1, h2 = math.sqrt(q) * z1, math.sqrt(q) * (c0 * z1 + math.sqrt(1 - c0 * c0) * z2)
    w = torch.randn(width, width, generator=g).double() * math.sqrt(sw2 / width)
    b = torch.randn(width, generator=g, dtype=torch.float64) * math.sqrt(sb2)
    o1, o2 = MODULES[act](h1) @ w.T + b, MODULES[act](h2) @ w.T + b
    c_mc = float((o1 * o2).mean() / torch.sqrt(o1.pow(2).mean() * o2.pow(2).mean()))
    assert c_mc == pytest.approx(theory.correlation_map(act, sw2, sb2, c0, q=q), abs=0.01)
