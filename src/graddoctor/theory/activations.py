"""Nonlinearities and their Gaussian moments: one entry per activation (neural-tangents style).

Each entry holds the function and its derivative (numpy), where they are not smooth (`kinks`),
and closed forms of the four moments the mean-field recursions need, where they exist:

    V(q)          = E[phi(sqrt(q) z)^2]                         length map (Poole et al. 2016, eq. 3)
    D(q)          = E[phi'(sqrt(q) z)^2]                        chi_1 = sigma_w^2 D(q*) (eq. 7)
    C(q1, q2, c)  = E[phi(u1) phi(u2)]                          correlation map (eq. 5)
    C'(q1, q2, c) = E[phi'(u1) phi'(u2)]                        chi_c (Schoenholz et al. 2017, eq. 5)

with z ~ N(0, 1) and (u1, u2) centred Gaussian, variances q1, q2, correlation c. Without a closed
form they come from quadrature (`_quadrature`). Numpy only; torch is imported only to read a module.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from . import _quadrature as quad

Fn = Callable[[np.ndarray], np.ndarray]
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


@dataclasses.dataclass(frozen=True)
class ClosedForms:
    """Closed-form moments: V(q), D(q), C(q1, q2, c), C'(q1, q2, c) (see the module docstring)."""

    second: Callable[[np.ndarray], np.ndarray]
    deriv_second: Callable[[np.ndarray], np.ndarray]
    cross: Callable[[float, float, float], float]
    deriv_cross: Callable[[float, float, float], float]


@dataclasses.dataclass(frozen=True)
class Activation:
    """One nonlinearity phi: canonical name, phi and phi' on numpy arrays, kinks, closed forms.

    `kinks` are the points where phi or phi' is not smooth (panel edges for quadrature); `scale` is
    the width of its curved region (tanh: 1, sigmoid: 2), used to place panels at large variance.
    """

    name: str
    fn: Fn = dataclasses.field(repr=False)
    deriv: Fn = dataclasses.field(repr=False)
    kinks: tuple[float, ...] = ()
    scale: float = 1.0
    closed: ClosedForms | None = dataclasses.field(default=None, repr=False)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(np.asarray(x, dtype=float))

    @property
    def bounded(self) -> bool:
        """Whether |phi| stays bounded (then q* is finite for every sigma_w^2)."""
        big = np.array([-1e6, 1e6])
        return bool(np.all(np.abs(self.fn(big)) < 1e3))


# erf(x) = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)): 36 terms reach 1e-16 below |x| = 2.2.
_ERF_SERIES = np.array([(-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(36)]) * 2 / math.sqrt(math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function in numpy, to 2e-15: Maclaurin series below 2.2, continued fraction above."""
    x = np.asarray(x, dtype=float)
    a = np.abs(x)
    out = np.empty_like(a)
    small = a < 2.2
    xs = a[small]
    x2 = xs * xs
    acc = np.full_like(xs, _ERF_SERIES[-1])
    for coef in _ERF_SERIES[-2::-1]:  # Horner in x^2
        acc = acc * x2 + coef
    out[small] = xs * acc
    xl = a[~small]
    frac = xl.copy()
    for k in range(40, 0, -1):  # erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
        frac = xl + (k / 2.0) / frac
    with np.errstate(invalid="ignore"):
        out[~small] = 1.0 - np.exp(-xl * xl) / math.sqrt(math.pi) / frac
    return np.sign(x) * out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _arccos_forms(slope: float) -> ClosedForms:
    """phi(x) = max(x, 0) + a min(x, 0): arc-cosine kernel (Cho & Saul 2009), theta = arccos(c).

    C  = sqrt(q1 q2) / (2 pi) [(1 + a^2)(sin theta + (pi - theta) c) - 2a (sin theta - theta c)]
    C' = [(1 + a^2)(pi - theta) + 2a theta] / (2 pi);  V(q) = q (1 + a^2) / 2;  D = (1 + a^2) / 2.
    """
    a = slope

    def cross(q1: float, q2: float, c: float) -> float:
        c = float(np.clip(c, -1, 1))
        th = math.acos(c)
        s = math.sin(th)
        return math.sqrt(q1 * q2) / (2 * math.pi) * ((1 + a * a) * (s + (math.pi - th) * c) - 2 * a * (s - th * c))

    def deriv_cross(q1: float, q2: float, c: float) -> float:
        th = math.acos(float(np.clip(c, -1, 1)))
        return ((1 + a * a) * (math.pi - th) + 2 * a * th) / (2 * math.pi)

    return ClosedForms(
        second=lambda q: np.asarray(q, dtype=float) * (1 + a * a) / 2,
        deriv_second=lambda q: np.full_like(np.asarray(q, dtype=float), (1 + a * a) / 2),
        cross=cross,
        deriv_cross=deriv_cross,
    )


def _erf_forms() -> ClosedForms:
    """phi = erf (Williams 1997): V = (2/pi) arcsin(2q / (1 + 2q)), D = (4/pi) / sqrt(1 + 4q),

    C = (2/pi) arcsin(2 c sqrt(q1 q2) / sqrt((1 + 2 q1)(1 + 2 q2))),
    C' = (4/pi) / sqrt((1 + 2 q1)(1 + 2 q2) - 4 c^2 q1 q2).
    """
    return ClosedForms(
        second=lambda q: 2 / np.pi * np.arcsin(2 * np.asarray(q, dtype=float) / (1 + 2 * np.asarray(q, dtype=float))),
        deriv_second=lambda q: 4 / np.pi / np.sqrt(1 + 4 * np.asarray(q, dtype=float)),
        cross=lambda q1, q2, c: 2 / math.pi * math.asin(2 * c * math.sqrt(q1 * q2) / math.sqrt((1 + 2 * q1) * (1 + 2 * q2))),
        deriv_cross=lambda q1, q2, c: 4 / math.pi / math.sqrt((1 + 2 * q1) * (1 + 2 * q2) - 4 * c * c * q1 * q2),
    )


def _identity_forms() -> ClosedForms:
    return ClosedForms(
        second=lambda q: np.asarray(q, dtype=float) * 1.0,
        deriv_second=lambda q: np.ones_like(np.asarray(q, dtype=float)),
        cross=lambda q1, q2, c: c * math.sqrt(q1 * q2),
        deriv_cross=lambda q1, q2, c: 1.0,
    )


def _leaky(a: float, name: str) -> Activation:
    return Activation(name, lambda x: np.where(x > 0, x, a * x), lambda x: np.where(x > 0, 1.0, a), (0.0,),
                      closed=_arccos_forms(a))


def _elu(alpha: float, lam: float, name: str) -> Activation:
    return Activation(name, lambda x: lam * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
                      lambda x: lam * np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0))), (0.0,))


def _gelu(approximate: str = "none") -> Activation:
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)

        def deriv(x: np.ndarray) -> np.ndarray:
            t = np.tanh(k * (x + 0.044715 * x**3))
            return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)

        return Activation("gelu:tanh", lambda x: 0.5 * x * (1 + np.tanh(k * (x + 0.044715 * x**3))), deriv)
    return Activation("gelu", lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))),
                      lambda x: 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))


def _softplus(beta: float = 1.0) -> Activation:
    return Activation(f"softplus:{beta:g}", lambda x: np.logaddexp(0.0, beta * x) / beta, lambda x: _sigmoid(beta * x),
                      scale=1.0 / beta)


def _hardtanh(lo: float = -1.0, hi: float = 1.0) -> Activation:
    if not lo < hi:
        raise ConfigError(f"hardtanh needs min < max, got hardtanh:{lo:g}:{hi:g}.")
    return Activation(f"hardtanh:{lo:g}:{hi:g}", lambda x: np.clip(x, lo, hi),
                      lambda x: ((x > lo) & (x < hi)).astype(float), (lo, hi))


def _silu_deriv(x: np.ndarray) -> np.ndarray:
    s = _sigmoid(x)
    return s * (1 + x * (1 - s))


# name -> (builder, number of float parameters it takes at most). Formulas in each builder.
_TABLE: dict[str, tuple[Callable[..., Activation], int]] = {
    "identity": (lambda: Activation("identity", lambda x: x * 1.0, lambda x: np.ones_like(x), closed=_identity_forms()), 0),
    "relu": (lambda: _leaky(0.0, "relu"), 0),
    "leaky_relu": (lambda a=0.01: _leaky(a, f"leaky_relu:{a:g}"), 1),
    "elu": (lambda alpha=1.0: _elu(alpha, 1.0, f"elu:{alpha:g}"), 1),
    "selu": (lambda: _elu(SELU_ALPHA, SELU_LAMBDA, "selu"), 0),
    "celu": (lambda alpha=1.0: Activation(f"celu:{alpha:g}", lambda x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0) / alpha)),
                                          lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0) / alpha)), (0.0,), alpha), 1),
    "gelu": (_gelu, 0),
    "silu": (lambda: Activation("silu", lambda x: x * _sigmoid(x), _silu_deriv), 0),
    "softplus": (_softplus, 1),
    "tanh": (lambda: Activation("tanh", np.tanh, lambda x: 1 - np.tanh(x) ** 2), 0),
    "sigmoid": (lambda: Activation("sigmoid", _sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x)), scale=2.0), 0),
    "hardtanh": (_hardtanh, 2),
    "relu6": (lambda: dataclasses.replace(_hardtanh(0.0, 6.0), name="relu6"), 0),
    "softsign": (lambda: Activation("softsign", lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2, (0.0,)), 0),
    "erf": (lambda: Activation("erf", erf, lambda x: 2 / math.sqrt(math.pi) * np.exp(-x * x), closed=_erf_forms()), 0),
}
_ALIASES = {"linear": "identity", "swish": "silu", "leakyrelu": "leaky_relu", "gelu_tanh": "gelu:tanh"}
NAMES = tuple(sorted(_TABLE))


def from_name(name: str) -> Activation:
    """Parse "tanh", "leaky_relu:0.2", "elu:1.5", "hardtanh:-2:2", "gelu:tanh", "softplus:2"."""
    key, *args = _ALIASES.get(name.strip().lower(), name.strip().lower()).split(":")
    key = _ALIASES.get(key, key)
    if key not in _TABLE:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(NAMES)} (parameters after ':', e.g. 'leaky_relu:0.2').")
    builder, n_params = _TABLE[key]
    if key == "gelu":
        if args not in ([], ["tanh"], ["none"]):
            raise ConfigError(f"gelu takes 'gelu' or 'gelu:tanh', got {name!r}.")
        return builder(*args)
    if len(args) > n_params:
        raise ConfigError(f"activation {key!r} takes at most {n_params} parameter(s) after ':', got {name!r}.")
    try:
        values = [float(a) for a in args]
    except ValueError:
        raise ConfigError(f"activation parameters must be numbers, got {name!r}.") from None
    return builder(*values)


def from_module(module: Any) -> Activation | None:
    """The Activation of a torch module, or None when it is not a known elementwise nonlinearity.

    A custom module may declare itself with a class attribute `graddoctor_activation = "erf"`.
    """
    declared = getattr(module, "graddoctor_activation", None)
    if isinstance(declared, str):
        return from_name(declared)
    from torch import nn

    simple = {nn.Identity: "identity", nn.ReLU: "relu", nn.SELU: "selu", nn.SiLU: "silu", nn.Tanh: "tanh",
              nn.Sigmoid: "sigmoid", nn.Softsign: "softsign"}
    for cls, name in simple.items():
        if type(module) is cls:
            return from_name(name)
    if type(module) is nn.LeakyReLU:
        return from_name(f"leaky_relu:{module.negative_slope!r}")
    if type(module) in (nn.ELU, nn.CELU):
        return from_name(f"{type(module).__name__.lower()}:{module.alpha!r}")
    if type(module) is nn.GELU:
        return from_name("gelu:tanh" if module.approximate == "tanh" else "gelu")
    if type(module) is nn.Softplus:
        return from_name(f"softplus:{module.beta!r}")
    if type(module) in (nn.Hardtanh, nn.ReLU6):
        return from_name(f"hardtanh:{module.min_val!r}:{module.max_val!r}")
    return None


def resolve(activation: Activation | str | Any) -> Activation:
    """An Activation from itself, a name ("tanh", "leaky_relu:0.2") or an nn.Module instance."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        return from_name(activation)
    if isinstance(activation, type):
        raise ConfigError(f"got the class {activation.__name__}; pass an instance, e.g. {activation.__name__}().")
    found = from_module(activation)
    if found is None:
        raise ConfigError(
            f"no mean-field entry for activation {type(activation).__name__}; pass a name ({', '.join(NAMES)}) "
            "or give your module a class attribute graddoctor_activation = '<name>'."
        )
    return found


# -- moments ---------------------------------------------------------------------------------------


def _std(q: Any) -> np.ndarray:
    """sqrt(q), with q = 0 read as its limit q -> 0+: at a kink at 0 (ELU, SELU) both sides count."""
    return np.sqrt(np.maximum(np.asarray(q, dtype=float), 1e-300))


def second_moment(act: Activation, q: Any) -> np.ndarray:
    """V(q) = E[phi(sqrt(q) z)^2], z ~ N(0, 1): the length map before sigma_w^2, sigma_b^2."""
    if act.closed is not None:
        return act.closed.second(q)
    return quad.expect(lambda x: act.fn(x) ** 2, 0.0, _std(q), act.kinks, act.scale)


def deriv_second_moment(act: Activation, q: Any) -> np.ndarray:
    """D(q) = E[phi'(sqrt(q) z)^2]: chi_1 = sigma_w^2 D(q) (Poole et al. 2016, eq. 7)."""
    if act.closed is not None:
        return act.closed.deriv_second(q)
    return quad.expect(lambda x: act.deriv(x) ** 2, 0.0, _std(q), act.kinks, act.scale)


def length_slope(act: Activation, q: Any) -> np.ndarray:
    """dV/dq = E[phi(u) phi'(u) z] / sqrt(q), u = sqrt(q) z (Stein's lemma; no phi'' needed).

    Equals E[phi'(u)^2 + phi(u) phi''(u)], the slope of the length map of Schoenholz et al. 2017,
    eq. 3. Needs q > 0; the caller handles q = 0 (slope phi'(0)^2 when phi(0) = 0).
    """
    q = np.maximum(np.asarray(q, dtype=float), 1e-300)
    s = np.sqrt(q)
    return quad.expect(lambda x: act.fn(x) * act.deriv(x) * x, 0.0, s, act.kinks, act.scale) / q


def cross_moment(act: Activation, q1: float, q2: float, c: float) -> float:
    """C(q1, q2, c) = E[phi(u1) phi(u2)] (Poole et al. 2016, eq. 5 before sigma_w^2, sigma_b^2)."""
    if act.closed is not None:
        return float(act.closed.cross(q1, q2, c))
    return quad.gaussian_pair(act.fn, act.fn, q1, q2, c, act.kinks, act.scale)


def deriv_cross_moment(act: Activation, q1: float, q2: float, c: float) -> float:
    """C'(q1, q2, c) = E[phi'(u1) phi'(u2)]: chi_c = sigma_w^2 C'(q*, q*, c*) (Schoenholz et al. eq. 5)."""
    if act.closed is not None:
        return float(act.closed.deriv_cross(q1, q2, c))
    return quad.gaussian_pair(act.deriv, act.deriv, q1, q2, c, act.kinks, act.scale)
