"""Mean-field signal propagation in deep random networks: length and correlation maps, chi_1, phases.

For a fully connected layer h^{l+1} = W x^l + b, x^l = phi(h^l), with W_ij ~ (0, sigma_w^2 / fan_in)
and b_i ~ (0, sigma_b^2), in the wide limit (Poole et al. 2016; Schoenholz et al. 2017):

    q^{l+1} = sigma_w^2 E[phi(sqrt(q^l) z)^2] + sigma_b^2              length map (Poole eq. 3)
    chi_1   = sigma_w^2 E[phi'(sqrt(q*) z)^2]                          (Poole eq. 7)

chi_1 is the factor by which the squared norm of the back-propagated signal dL/dh (graddoctor's
`out_grad_norm`) changes per layer (Schoenholz eq. 13-15). It is *not* the factor of the
weight-gradient norm `grad_norm`: with a batch, the cross-sample terms of ||dW||^2 dominate.
Numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from .activations import cross_moment, deriv_cross_moment, deriv_second_moment, length_slope, resolve, second_moment

Q_MIN, Q_MAX = 1e-12, 1e12      # q grid searched for fixed points; beyond Q_MAX we call q* infinite
CRITICAL_TOL = 1e-3             # |chi_1 - 1| within this: "critical" (depth scales above ~1000 layers)
TRAINABLE_XI = 6.0              # Schoenholz et al. 2017, Sec. 5 / Fig. 5: trainable when depth < ~6 xi_c


@dataclasses.dataclass(frozen=True)
class FixedPoint:
    """Where the length map settles: q* and its kind.

    kind: "finite" (a stable q* > 0), "zero" (q -> 0: phi(0) = 0, sigma_b^2 = 0 and slope <= 1 at 0),
    "infinite" (q grows without bound), "marginal" (every q is a fixed point: q* = q0; e.g. ReLU at
    sigma_w^2 = 2, sigma_b^2 = 0). `slope` is d q^{l+1} / d q^l at q* (at Q_MAX when infinite).
    """

    q: float
    kind: str
    slope: float


@dataclasses.dataclass(frozen=True)
class DepthScales:
    """Depth scales of Schoenholz et al. 2017 and the quantities they come from.

    xi_q = -1 / log(slope of the length map at q*)     (eq. 6)
    xi_c = -1 / log(chi_c)                             (eq. 9; inf at criticality)
    xi_grad = -1 / log(chi_1)                          (eq. 15; signed: < 0 means gradients grow)
    trainable_depth = 6 xi_c                           (Sec. 5)

    When q* is infinite (an unbounded phi whose signal grows without limit, e.g. ReLU with
    sigma_w^2 > 2) the correlation map has no finite fixed point to linearise around: c*, chi_c,
    xi_q, xi_c and the trainable depth are None; chi_1 (at q -> infinity) and xi_grad still hold.
    """

    q_star: float
    fixed_point_kind: str
    chi1: float
    c_star: float | None
    chi_c: float | None
    xi_q: float | None
    xi_c: float | None
    xi_grad: float
    trainable_depth: float | None
    phase: str


def _check(sigma_w2: float, sigma_b2: float) -> None:
    if not (isinstance(sigma_w2, (int, float)) and math.isfinite(sigma_w2) and sigma_w2 > 0):
        raise ConfigError(f"sigma_w2 must be a positive number (weight variance x fan_in), got {sigma_w2!r}.")
    if not (isinstance(sigma_b2, (int, float)) and math.isfinite(sigma_b2) and sigma_b2 >= 0):
        raise ConfigError(f"sigma_b2 must be a number >= 0 (bias variance), got {sigma_b2!r}.")


def length_map(activation: Any, sigma_w2: float, sigma_b2: float, q: Any) -> np.ndarray:
    """q^{l+1} = sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2 (Poole et al. 2016, eq. 3)."""
    return sigma_w2 * second_moment(resolve(activation), q) + sigma_b2


def root(h: Callable[[float], float], lo: float, hi: float, h_lo: float, h_hi: float, rtol: float = 1e-12) -> float:
    """A root of h in [lo, hi], h(lo) and h(hi) of opposite signs: Illinois false position."""
    if h_lo == 0 or h_hi == 0:
        return lo if h_lo == 0 else hi
    x, keep = lo, 0
    for _ in range(200):
        x = (lo * h_hi - hi * h_lo) / (h_hi - h_lo)
        hx = h(x)
        if hx == 0 or abs(hi - lo) <= rtol * max(abs(lo), abs(hi), 1e-300):
            return x
        if (hx > 0) == (h_hi > 0):
            hi, h_hi = x, hx
            h_lo = h_lo / 2 if keep == -1 else h_lo   # lo kept twice: halve its value (Illinois)
            keep = -1
        else:
            lo, h_lo = x, hx
            h_hi = h_hi / 2 if keep == 1 else h_hi
            keep = 1
    return x


def fixed_point(activation: Any, sigma_w2: float, sigma_b2: float, q0: float = 1.0) -> FixedPoint:
    """The fixed point q* of the length map reached from q^0 = q0 (Poole et al. 2016, Fig. 1).

    Example:
        >>> fixed_point("tanh", 1.0, 0.0).kind            # tanh at sigma_w^2 = 1 collapses to q = 0
        'zero'
        >>> fixed_point("relu", 2.0, 0.0).kind            # He init: every q is a fixed point
        'marginal'

    The map is scanned on a log grid from 1e-12 to 1e12; the stable fixed point in the direction
    the map moves from q0 is refined by false position.
    """
    _check(sigma_w2, sigma_b2)
    act = resolve(activation)
    if not (math.isfinite(q0) and q0 > 0):
        raise ConfigError(f"q0 (the input second moment) must be a positive number, got {q0!r}.")
    grid = np.unique(np.concatenate([np.logspace(-12, 12, 193), [q0]]))
    gap = length_map(act, sigma_w2, sigma_b2, grid) - grid
    if np.all(np.abs(gap) <= 1e-9 * grid):
        return FixedPoint(q0, "marginal", 1.0)
    gap_fn = lambda q: float(length_map(act, sigma_w2, sigma_b2, np.array([q]))[0] - q)  # noqa: E731
    i0 = int(np.searchsorted(grid, q0))
    if gap[i0] > 0:
        above = np.flatnonzero(gap[i0:] <= 0)
        if above.size == 0:
            return FixedPoint(math.inf, "infinite", float(sigma_w2 * length_slope(act, Q_MAX)))
        j = i0 + int(above[0])
        q = root(gap_fn, grid[j - 1], grid[j], gap[j - 1], gap[j])
    elif gap[i0] < 0:
        below = np.flatnonzero(gap[: i0 + 1] >= 0)
        if below.size:
            j = int(below[-1])
            q = root(gap_fn, grid[j], grid[j + 1], gap[j], gap[j + 1])
        else:
            f0 = float(sigma_w2 * act.fn(np.zeros(1))[0] ** 2 + sigma_b2)  # the map at q = 0: phi(0) is exact
            if f0 <= 0:
                return FixedPoint(0.0, "zero", float(sigma_w2 * deriv_second_moment(act, 0.0)))
            q = root(gap_fn, 0.0, grid[0], f0, gap[0])
    else:
        q = q0
    return FixedPoint(float(q), "finite", float(sigma_w2 * length_slope(act, q)))


def _q_at(point: FixedPoint) -> float:
    """The q at which chi_1 and the correlation map are evaluated (Q_MAX stands for infinity)."""
    return Q_MAX if point.kind == "infinite" else point.q


def chi1(activation: Any, sigma_w2: float, sigma_b2: float, q: float | None = None) -> float:
    """chi_1 = sigma_w^2 E[phi'(sqrt(q) z)^2] at q = q* (Poole et al. 2016, eq. 7; Schoenholz eq. 13).

    The factor by which ||dL/dh||^2 (pre-activation gradient, `out_grad_norm` squared) changes
    per layer at the fixed point: < 1 vanishing (ordered), > 1 exploding (chaotic).

    Example:
        >>> round(chi1("relu", 2.0, 0.0), 6)              # He init: critical
        1.0
        >>> round(chi1("sigmoid", 1.0, 0.0), 4)
        0.0557

    Args:
        q: evaluate at this pre-activation variance instead of the fixed point q*.
    """
    _check(sigma_w2, sigma_b2)
    act = resolve(activation)
    if q is None:
        q = _q_at(fixed_point(act, sigma_w2, sigma_b2))
    return float(sigma_w2 * deriv_second_moment(act, q))


def correlation_map(activation: Any, sigma_w2: float, sigma_b2: float, c: float, q: float | None = None) -> float:
    """c^{l+1} = (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q^{l+1}, u_i ~ N(0, q), corr c (Poole eq. 5).

    Normalised by the next layer's length q^{l+1} = sigma_w^2 V(q) + sigma_b^2, which equals q at
    the fixed point and keeps c = 1 a fixed point when q* is infinite.
    """
    _check(sigma_w2, sigma_b2)
    act = resolve(activation)
    if q is None:
        q = _q_at(fixed_point(act, sigma_w2, sigma_b2))
    if q <= 0:
        return float(c)  # the q -> 0 limit of an activation with phi(0) = 0 is linear: c is kept
    top = sigma_w2 * cross_moment(act, q, q, c) + sigma_b2
    return float(top / (sigma_w2 * second_moment(act, np.array([q]))[0] + sigma_b2))


def fixed_correlation(activation: Any, sigma_w2: float, sigma_b2: float) -> tuple[float, float]:
    """(c*, chi_c): the stable fixed point of the correlation map and its slope (Schoenholz eq. 5, 9).

    chi_c = sigma_w^2 E[phi'(u1) phi'(u2)] at q*, c*. In the ordered and critical phases c* = 1
    and chi_c = chi_1; in the chaotic phase c* < 1 is found by false position from c = 1 down.
    """
    act = resolve(activation)
    point = fixed_point(act, sigma_w2, sigma_b2)
    if point.kind == "infinite":
        raise ConfigError(
            f"{act.name} at sigma_w^2 = {sigma_w2:g}, sigma_b^2 = {sigma_b2:g} has no finite fixed point q* "
            "(the signal grows without bound), so the correlation map has no fixed point to linearise around."
        )
    q = _q_at(point)
    x1 = float(sigma_w2 * deriv_second_moment(act, q))
    if x1 <= 1 + 1e-12 or point.kind == "zero":
        return 1.0, x1
    gap = lambda c: correlation_map(act, sigma_w2, sigma_b2, c, q) - c  # noqa: E731
    hi, gap_hi = 1.0 - 1e-9, gap(1.0 - 1e-9)       # c = 1 is unstable here: gap < 0 just below it
    for c in np.linspace(0.9, -1.0, 20):
        gap_c = gap(c)
        if gap_c >= 0:
            c_star = root(gap, c, hi, gap_c, gap_hi)
            break
        hi, gap_hi = c, gap_c
    else:
        c_star = -1.0
    return float(c_star), float(sigma_w2 * deriv_cross_moment(act, q, q, c_star))


def phase(chi: float) -> str:
    """'ordered' (chi_1 < 1: gradients vanish), 'critical' (|chi_1 - 1| <= 1e-3), 'chaotic' (> 1)."""
    if abs(chi - 1.0) <= CRITICAL_TOL:
        return "critical"
    return "ordered" if chi < 1 else "chaotic"


def _xi(factor: float) -> float:
    """-1 / log(factor): the depth over which a quantity changing by `factor` per layer moves by e."""
    if factor <= 0:
        return 0.0
    log = math.log(factor)
    return math.inf if abs(log) < 1e-12 else -1.0 / log


def depth_scales(activation: Any, sigma_w2: float, sigma_b2: float) -> DepthScales:
    """xi_q, xi_c, the gradient depth scale and the trainable depth (Schoenholz et al. 2017).

    Example:
        >>> d = depth_scales("tanh", 1.5, 0.05)
        >>> d.phase, round(d.xi_c, 1), round(d.trainable_depth)
        ('ordered', 15.8, 95)
    """
    act = resolve(activation)
    point = fixed_point(act, sigma_w2, sigma_b2)
    x1 = float(sigma_w2 * deriv_second_moment(act, _q_at(point)))
    if point.kind == "infinite":
        return DepthScales(point.q, point.kind, x1, None, None, None, None, _xi(x1), None, phase(x1))
    c_star, chi_c = fixed_correlation(act, sigma_w2, sigma_b2)
    xi_q = math.inf if point.kind == "marginal" or point.slope >= 1 else _xi(point.slope)
    xi_c = _xi(chi_c) if chi_c < 1 else math.inf
    return DepthScales(point.q, point.kind, x1, c_star, chi_c, xi_q, xi_c, _xi(x1), TRAINABLE_XI * xi_c, phase(x1))


def critical_sigma_w2(activation: Any, sigma_b2: float = 0.0) -> float:
    """The sigma_w^2 at which chi_1 = 1 for this sigma_b^2: the order-to-chaos line (Poole Fig. 2).

    Example:
        >>> round(critical_sigma_w2("tanh", 0.0), 6)
        1.0
        >>> round(critical_sigma_w2("tanh", 0.05), 2)
        1.76

    Raises:
        ConfigError: chi_1 does not cross 1 for sigma_w^2 in [1e-3, 1e4].
    """
    _check(1.0, sigma_b2)
    act = resolve(activation)
    h = lambda s: math.log(max(chi1(act, math.exp(s), sigma_b2), 1e-300))  # noqa: E731
    grid = np.linspace(math.log(1e-3), math.log(1e4), 29)
    values = [h(grid[0])]
    for s in grid[1:]:
        if values[-1] >= 0:
            break
        values.append(h(s))
    j = len(values) - 1
    if values[0] >= 0 or values[j] < 0:
        raise ConfigError(
            f"chi_1 of {act.name} never crosses 1 for sigma_w^2 in [1e-3, 1e4] at sigma_b^2 = {sigma_b2:g} "
            f"(chi_1 runs from {math.exp(values[0]):.3g} to {math.exp(values[j]):.3g}): no critical init exists."
        )
    return math.exp(root(h, grid[j - 1], grid[j], values[j - 1], values[j], rtol=1e-13))
