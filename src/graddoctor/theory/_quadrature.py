"""Expectations of functions of one or two Gaussian (or spherical) variables, by quadrature.

Numpy only. Two rules live here:

* `hermite_expect` / `hermite_expect2`: textbook Gauss-Hermite (probabilists' weight e^{-z^2/2}),
  1-D and 2-D product rule. Exact for polynomials up to degree 2n-1; fast and very accurate for
  smooth activations at moderate variance, poor across kinks (ReLU', ELU', hardtanh) and for
  large variances (tanh' at q = 10: 2 % error with 100 nodes).
* `expect` / `expect2` (the default everywhere): Gauss-Legendre on panels of the Gaussian weight,
  split at the activation's kinks and at multiples of its feature scale, so each panel holds a
  smooth integrand. Exponentially convergent for piecewise-smooth functions at any variance.

`expect2` is nested: E[f(x1) g(x2)] = E_{x1}[f(x1) E[g(x2) | x1]], with x2 | x1 Gaussian (or a
spherical marginal, for BatchNorm) of known mean and spread.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from ..errors import ConfigError

Fn = Callable[[np.ndarray], np.ndarray]

_GL_NODES, _GL_WEIGHTS = leggauss(12)
_HERMITE_ORDER = 100
# Panel edges, in standard deviations of the weight: dense near 0, out to where e^{-z^2/2} < 1e-21.
_BASE = np.array([0.0, 0.4, 0.8, 1.3, 2.0, 2.8, 3.8, 5.0, 6.5, 8.0, 10.0])
_BASE = np.concatenate([-_BASE[:0:-1], _BASE])
# Extra edges at +-scale * these, mapped into z, resolve features narrower than a panel.
_SCALE_STEPS = np.array([0.25, 1.0, 4.0])


@dataclasses.dataclass(frozen=True)
class Density:
    """A symmetric weight on [-half_width, half_width]: log_pdf up to a constant, and its std."""

    log_pdf: Callable[[np.ndarray], np.ndarray]
    std: float
    half_width: float
    ends: tuple[float, ...] = (1.0,)   # extra edges at +-half_width * these (graded toward a singular end)


NORMAL = Density(log_pdf=lambda z: -0.5 * z * z, std=1.0, half_width=10.0)


def sphere_marginal(exponent: float) -> Density:
    """Weight (1 - t^2)^exponent on [-1, 1]: one coordinate of a uniform point on a sphere.

    A uniform point on the unit sphere of R^n has coordinates with density proportional to
    (1 - t^2)^((n-3)/2); its variance is 1 / (2 * exponent + 3).
    """
    if exponent < 0:
        raise ConfigError(f"sphere_marginal needs exponent >= 0, got {exponent}")

    def log_pdf(t: np.ndarray) -> np.ndarray:
        if exponent == 0:
            return np.zeros_like(t)
        with np.errstate(divide="ignore"):
            return exponent * np.log1p(-np.minimum(t * t, 1.0))

    # (1 - t^2)^p with small p is not smooth at t = +-1: edges graded geometrically toward the ends.
    ends = tuple(1 - 10.0 ** -k for k in range(1, 10)) + (1.0,)
    return Density(log_pdf=log_pdf, std=float(1.0 / np.sqrt(2.0 * exponent + 3.0)), half_width=1.0, ends=ends)


def _edges(mean: np.ndarray, std: np.ndarray, kinks: tuple[float, ...], scale: float, density: Density) -> np.ndarray:
    """Panel edges in z for each row: base grid, kinks and feature-scale points mapped to z."""
    rows = mean.shape[0]
    base = np.broadcast_to(_BASE * density.std, (rows, _BASE.size))
    xs = np.array(list(kinks) + list(scale * _SCALE_STEPS) + list(-scale * _SCALE_STEPS))
    safe = np.where(std > 0, std, 1.0)
    mapped = (xs[None, :] - mean[:, None]) / safe[:, None]
    mapped = np.where(std[:, None] > 0, mapped, 0.0)
    edges = np.clip(np.concatenate([base, mapped], axis=1), -density.half_width, density.half_width)
    ends = density.half_width * np.array(density.ends)
    edges = np.concatenate([edges, np.broadcast_to(np.concatenate([-ends, ends]), (rows, 2 * ends.size))], axis=1)
    return np.sort(edges, axis=1)


def nodes(mean, std, kinks: tuple[float, ...] = (), scale: float = 1.0, density: Density = NORMAL):
    """Quadrature nodes z [rows, K] and normalised weights w [rows, K] for x = mean + std * z.

    Rows follow the flattened broadcast of `mean` and `std`. The weights of each row sum to 1 (the
    density's normalising constant is never needed).
    """
    mean, std = (np.asarray(a, dtype=float).ravel() for a in np.broadcast_arrays(mean, std))
    edges = _edges(mean, std, kinks, scale, density)
    half = (edges[:, 1:] - edges[:, :-1]) / 2
    mid = (edges[:, 1:] + edges[:, :-1]) / 2
    z = mid[..., None] + half[..., None] * _GL_NODES
    logp = density.log_pdf(z)
    w = half[..., None] * _GL_WEIGHTS * np.exp(logp - logp.max(axis=(1, 2), keepdims=True))
    z, w = z.reshape(len(mean), -1), w.reshape(len(mean), -1)
    return z, w / w.sum(axis=1, keepdims=True)


def expect(f: Fn, mean, std, kinks: tuple[float, ...] = (), scale: float = 1.0, density: Density = NORMAL) -> np.ndarray:
    """E[f(mean + std * Z)] with Z ~ `density`, elementwise over the broadcast of mean and std."""
    shape = np.broadcast(np.asarray(mean), np.asarray(std)).shape
    m, s = (np.asarray(a, dtype=float).reshape(-1, 1) for a in np.broadcast_arrays(mean, std))
    z, w = nodes(m, s, kinks, scale, density)
    return np.sum(w * f(m + s * z), axis=1).reshape(shape)


def expect2(
    f: Fn,
    g: Fn,
    outer: tuple[np.ndarray, np.ndarray],
    x1: np.ndarray,
    mean2: np.ndarray,
    std2: np.ndarray,
    kinks: tuple[float, ...] = (),
    scale: float = 1.0,
    inner: Density = NORMAL,
) -> float:
    """E[f(x1) g(x2)] from outer nodes (z, w) with x1(z), and x2 | z = mean2(z) + std2(z) * Z2."""
    _, w = outer
    return float(np.sum(w * f(x1) * expect(g, mean2, std2, kinks, scale, inner)))


def gaussian_pair(f: Fn, g: Fn, q1: float, q2: float, c: float, kinks: tuple[float, ...] = (), scale: float = 1.0) -> float:
    """E[f(u1) g(u2)] for centred Gaussians with variances q1, q2 and correlation c.

    u1 = sqrt(q1) z1, u2 = sqrt(q2) (c z1 + sqrt(1 - c^2) z2), z1, z2 independent N(0, 1).
    """
    c = float(np.clip(c, -1.0, 1.0))
    z, w = nodes(np.zeros(1), np.sqrt([q1]), kinks, scale)
    z, w = z[0], w[0]
    return expect2(f, g, (z, w), np.sqrt(q1) * z, np.sqrt(q2) * c * z,
                   np.full_like(z, np.sqrt(q2 * (1 - c * c))), kinks, scale)


def hermite_expect(f: Fn, q: float, order: int = _HERMITE_ORDER) -> float:
    """E[f(sqrt(q) z)], z ~ N(0, 1), by plain Gauss-Hermite with `order` nodes."""
    z, w = hermegauss(order)
    return float(np.sum(w * f(np.sqrt(q) * z)) / np.sqrt(2 * np.pi))


def hermite_expect2(f: Fn, g: Fn, q1: float, q2: float, c: float, order: int = 60) -> float:
    """E[f(u1) g(u2)] for the Gaussian pair of `gaussian_pair`, by the 2-D Gauss-Hermite product rule."""
    z, w = hermegauss(order)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    ww = np.outer(w, w) / (2 * np.pi)
    u1 = np.sqrt(q1) * z1
    u2 = np.sqrt(q2) * (c * z1 + np.sqrt(max(1 - c * c, 0.0)) * z2)
    return float(np.sum(ww * f(u1) * g(u2)))
