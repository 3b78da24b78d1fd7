"""One entry per nonlinearity: the numpy table matches torch, the moments match closed forms,
plain Gauss-Hermite and Monte-Carlo sampling (neural-tangents' elementwise_test idea)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from graddoctor.errors import ConfigError
from graddoctor.theory import _quadrature as quad
from graddoctor.theory import activations as A

CLOSED = ["relu", "leaky_relu:0.2", "leaky_relu:-0.5", "erf", "identity"]
SMOOTH = ["tanh", "sigmoid", "gelu", "gelu:tanh", "silu", "softplus:1", "erf"]  # analytic near the real axis
EVERY = ["identity", "relu", "leaky_relu:0.2", "elu:1", "elu:0.5", "selu", "celu:2", "gelu", "gelu:tanh", "silu",
         "softplus:1", "tanh", "sigmoid", "hardtanh:-1:1", "relu6", "softsign", "erf"]
TORCH_MODULES = {
    "identity": nn.Identity(), "relu": nn.ReLU(), "leaky_relu:0.2": nn.LeakyReLU(0.2), "elu:0.5": nn.ELU(0.5),
    "selu": nn.SELU(), "celu:2": nn.CELU(2.0), "gelu": nn.GELU(), "gelu:tanh": nn.GELU("tanh"), "silu": nn.SiLU(),
    "softplus:3": nn.Softplus(3.0), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "hardtanh:-2:1.5": nn.Hardtanh(-2.0, 1.5),
    "hardtanh:0:6": nn.ReLU6(), "softsign": nn.Softsign(),
}


def without_closed_forms(act: A.Activation) -> A.Activation:
    return dataclasses.replace(act, closed=None)


def test_numpy_erf_matches_math_erf_to_1e14():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, 2.2, -2.2, 2.2 - 1e-12, np.inf, -np.inf]])
    assert np.max(np.abs(A.erf(x) - np.array([math.erf(v) for v in x]))) < 1e-14


@pytest.mark.parametrize("name", sorted(TORCH_MODULES))
def test_table_matches_torch_function_and_autograd_derivative(name):
    act = A.resolve(TORCH_MODULES[name])
    assert act.name == A.from_name(name).name
    x = torch.linspace(-7, 7, 2801, dtype=torch.float64).requires_grad_()
    y = TORCH_MODULES[name](x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    xs = x.detach().numpy()
    away = np.min(np.abs(xs[:, None] - np.array(act.kinks or (1e9,))[None, :]), axis=1) > 1e-9
    np.testing.assert_allclose(act(xs), y.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(act.deriv(xs)[away], grad.numpy()[away], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", CLOSED)
def test_closed_forms_match_quadrature(name):
    act = A.from_name(name)
    quad_act = without_closed_forms(act)
    q = np.array([1e-3, 0.3, 1.0, 4.0, 50.0])
    np.testing.assert_allclose(A.second_moment(act, q), A.second_moment(quad_act, q), rtol=1e-10)
    np.testing.assert_allclose(A.deriv_second_moment(act, q), A.deriv_second_moment(quad_act, q), rtol=1e-10)
    for q1, q2, c in [(1.0, 1.0, 0.0), (0.5, 2.0, 0.7), (3.0, 0.2, -0.6), (1.0, 1.0, 0.999), (2.0, 2.0, -1.0)]:
        assert A.cross_moment(act, q1, q2, c) == pytest.approx(A.cross_moment(quad_act, q1, q2, c), rel=1e-9, abs=1e-12)
        assert A.deriv_cross_moment(act, q1, q2, c) == pytest.approx(
            A.deriv_cross_moment(quad_act, q1, q2, c), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", SMOOTH)
def test_panel_quadrature_matches_plain_gauss_hermite_1d_and_2d(name):
    act = without_closed_forms(A.from_name(name))
    for q in (0.25, 1.0):
        assert A.second_moment(act, q) == pytest.approx(quad.hermite_expect(lambda x: act.fn(x) ** 2, q), rel=1e-9)
        assert A.deriv_second_moment(act, q) == pytest.approx(quad.hermite_expect(lambda x: act.deriv(x) ** 2, q), rel=1e-9)
    for q1, q2, c in [(0.5, 1.0, 0.3), (1.0, 1.0, -0.8), (0.3, 0.6, 0.95)]:
        assert A.cross_moment(act, q1, q2, c) == pytest.approx(quad.hermite_expect2(act.fn, act.fn, q1, q2, c), rel=1e-8)


def test_kinked_moments_are_exact_where_plain_gauss_hermite_is_not():
    """SELU' jumps at 0 and hardtanh' at +-1: panels split there; Gauss-Hermite misses by ~1e-2."""
    selu = A.from_name("selu")
    lam, alpha = A.SELU_LAMBDA, A.SELU_ALPHA
    exact = lam**2 / 2 + lam**2 * alpha**2 * math.exp(2) * 0.5 * math.erfc(2 / math.sqrt(2))  # E[selu'(z)^2]
    assert A.deriv_second_moment(selu, 1.0) == pytest.approx(exact, rel=1e-12)
    assert abs(quad.hermite_expect(lambda x: selu.deriv(x) ** 2, 1.0) - exact) > 1e-3
    hardtanh = A.from_name("hardtanh")
    for q in (0.1, 2.0, 1e4):
        assert A.deriv_second_moment(hardtanh, q) == pytest.approx(math.erf(1 / math.sqrt(2 * q)), rel=1e-12)


def test_large_variance_is_resolved():
    """tanh' is a spike of width 1/sqrt(q) in z: E[tanh'(sqrt(q) z)^2] -> (4/3) / sqrt(2 pi q)."""
    tanh = A.from_name("tanh")
    q = 1e6
    assert A.deriv_second_moment(tanh, q) == pytest.approx(4 / 3 / math.sqrt(2 * math.pi * q), rel=1e-4)


@pytest.mark.parametrize("name", EVERY)
def test_moments_match_monte_carlo(name):
    act = A.from_name(name)
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((2, 200_000))
    for q in (0.7, 3.0):
        u = math.sqrt(q) * z1
        for value, samples in [(A.second_moment(act, q), act.fn(u) ** 2), (A.deriv_second_moment(act, q), act.deriv(u) ** 2)]:
            assert abs(value - samples.mean()) < 5 * samples.std() / math.sqrt(samples.size) + 1e-12
    q1, q2, c = 0.8, 2.0, 0.6
    u1, u2 = math.sqrt(q1) * z1, math.sqrt(q2) * (c * z1 + math.sqrt(1 - c * c) * z2)
    for value, samples in [(A.cross_moment(act, q1, q2, c), act.fn(u1) * act.fn(u2)),
                           (A.deriv_cross_moment(act, q1, q2, c), act.deriv(u1) * act.deriv(u2))]:
        assert abs(value - samples.mean()) < 5 * samples.std() / math.sqrt(samples.size) + 1e-12


def test_leaky_relu_with_zero_slope_is_relu():
    relu, leaky = A.from_name("relu"), A.from_name("leaky_relu:0")
    assert A.cross_moment(relu, 1.0, 2.0, 0.3) == A.cross_moment(leaky, 1.0, 2.0, 0.3)
    assert float(A.deriv_second_moment(leaky, 1.0)) == 0.5


def test_variance_zero_is_the_limit_from_above_at_a_kink():
    """At q = 0 both sides of SELU's kink count: (lambda^2 + lambda^2 alpha^2) / 2, not one side."""
    lam, alpha = A.SELU_LAMBDA, A.SELU_ALPHA
    assert float(A.deriv_second_moment(A.from_name("selu"), 0.0)) == pytest.approx(lam**2 * (1 + alpha**2) / 2, rel=1e-9)


def test_names_aliases_and_modules_resolve():
    assert A.resolve("LeakyReLU:0.2").name == "leaky_relu:0.2"
    assert A.resolve("swish").name == "silu"
    assert A.resolve("linear").name == "identity"
    assert A.resolve(nn.ReLU6()).name == "hardtanh:0:6"
    assert A.resolve(nn.GELU(approximate="tanh")).name == "gelu:tanh"

    class Erf(nn.Module):
        graddoctor_activation = "erf"

    assert A.resolve(Erf()).name == "erf"


@pytest.mark.parametrize("bad, needle", [
    ("tanhh", "unknown activation 'tanhh'"), ("leaky_relu:a", "numbers"), ("relu:2", "at most 0"),
    ("gelu:fast", "gelu:tanh"), ("hardtanh:1:-1", "min < max"), (nn.ReLU, "instance"),
    (nn.Mish(), "graddoctor_activation"), (3, "graddoctor_activation"),
])
def test_bad_activations_raise_config_error_saying_what_to_do(bad, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        A.resolve(bad)
