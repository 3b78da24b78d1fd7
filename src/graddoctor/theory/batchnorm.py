"""BatchNorm at initialization, for a finite batch: the gradient growth of Yang et al. 2019.

"A Mean Field Theory of Batch Normalization" (Yang, Pennington, Rao, Sohl-Dickstein, Schoenholz,
ICLR 2019). Setting: h = W x (a Linear layer; its bias cancels), then BatchNorm1d over a batch of
B samples (biased batch variance, as torch normalises), then an activation:

    h_hat = sqrt(B) P h / ||P h||,   P = I - 1 1^T / B,   x = phi(gamma h_hat + beta).

When every pair of samples has the same correlation (i.i.d. inputs; Yang et al.'s BSB1 structure),
P h / ||P h|| is uniform on the unit sphere of the (B-1)-dimensional subspace orthogonal to 1, so
every expectation reduces to one or two coordinates of that sphere. Writing d = phi'(h_hat) with
the affine folded in, the back-propagated signal dL/dh changes per block by (the trace of the
linearised backward map on the zero-sum gradient covariance, Yang et al. Sec. 3.2 and Thm 3.10):

    ||dL/dh||^2 / ||dL/dx||^2 = [ (B-1) m2 + m11 - m2h + mh11 ] / ((B - 3) v)

    m2 = E[d1^2],  m11 = E[d1 d2],  m2h = E[d1^2 h1^2],  mh11 = E[d1 h1 d2 h2]   (h_i = h_hat_i)

with v = q_h - k_h the variance of h across the batch (per-sample second moment minus the
cross-sample one). With the next layer's sigma_w^2 this gives the per-layer growth; for ReLU and
B -> infinity it tends to pi / (pi - 1) ~= 1.467 (Yang et al. Cor. 3.12). Numpy only.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..errors import ConfigError
from . import _quadrature as quad
from .activations import Activation

MIN_BATCH = 5   # E[1/chi^2_{B-1}] = 1/(B-3) and the 2-coordinate sphere marginal need B >= 5


@dataclasses.dataclass(frozen=True)
class SphereMoments:
    """Moments of phi and phi' of BatchNorm's output h_hat for one activation and batch size.

    p2 = E[phi(h1)^2], p11 = E[phi(h1) phi(h2)] (distinct samples), and m2, m11, m2h, mh11 as
    in the module docstring. batch None: the B -> infinity limit (h1, h2 independent N(0, 1)).
    """

    batch: int | None
    p2: float
    p11: float
    m2: float
    m11: float
    m2h: float
    mh11: float


def folded(act: Activation, gain: float, shift: float) -> Activation:
    """phi(gain * x + shift) as an Activation: BatchNorm's affine folded into what follows it."""
    if gain == 1.0 and shift == 0.0:
        return act
    if gain == 0.0:
        return Activation(f"{act.name}(0x{shift:+g})", lambda x: act.fn(np.full_like(x, shift)), lambda x: np.zeros_like(x))
    kinks = tuple((k - shift) / gain for k in act.kinks)
    return Activation(
        f"{act.name}({gain:g}x{shift:+g})",
        lambda x: act.fn(gain * x + shift),
        lambda x: gain * act.deriv(gain * x + shift),
        kinks,
        act.scale / abs(gain),
    )


def _check_batch(batch: int | None) -> None:
    if batch is not None and (not isinstance(batch, int) or batch < MIN_BATCH):
        raise ConfigError(
            f"the finite-batch BatchNorm theory needs an integer batch size >= {MIN_BATCH}, got {batch!r}; "
            "pass batch=None for the infinite-batch limit."
        )


def sphere_moments(act: Activation, batch: int | None) -> SphereMoments:
    """The six moments of `SphereMoments`, by nested quadrature over the sphere's marginals.

    h1 = sqrt(B-1) t with t ~ (1 - t^2)^((B-4)/2) on [-1, 1] (one coordinate of a uniform point on
    the sphere S^{B-2}); given t, h2 = -t / sqrt(B-1) + sqrt(B(B-2)/(B-1)) sqrt(1 - t^2) s with
    s ~ (1 - s^2)^((B-5)/2). Then E[h1^2] = 1 and E[h1 h2] = -1/(B-1), as sum_i h_i = 0 requires.
    """
    _check_batch(batch)
    if batch is None:
        return _gaussian_moments(act)
    b = float(batch)
    std1 = math.sqrt(b - 1)
    z, w = quad.nodes(np.zeros(1), np.array([std1]), act.kinks, act.scale, quad.sphere_marginal((b - 4) / 2))
    t, w = z[0], w[0]
    mean2 = -t / std1
    std2 = math.sqrt(b * (b - 2) / (b - 1)) * np.sqrt(np.maximum(1 - t * t, 0.0))
    inner = quad.sphere_marginal((b - 5) / 2)

    def pair(f, g) -> float:
        return quad.expect2(f, g, (t, w), std1 * t, mean2, std2, act.kinks, act.scale, inner)

    def one(f) -> float:
        return float(np.sum(w * f(std1 * t)))

    d = act.deriv
    dh = lambda x: d(x) * x  # noqa: E731
    return SphereMoments(batch, one(lambda x: act.fn(x) ** 2), pair(act.fn, act.fn), one(lambda x: d(x) ** 2),
                         pair(d, d), one(lambda x: (d(x) * x) ** 2), pair(dh, dh))


def _gaussian_moments(act: Activation) -> SphereMoments:
    def e(f) -> float:
        return float(quad.expect(f, 0.0, 1.0, act.kinks, act.scale))

    mean_phi, mean_d, mean_dh = e(act.fn), e(act.deriv), e(lambda x: act.deriv(x) * x)
    return SphereMoments(None, e(lambda x: act.fn(x) ** 2), mean_phi**2, e(lambda x: act.deriv(x) ** 2), mean_d**2,
                         e(lambda x: (act.deriv(x) * x) ** 2), mean_dh**2)


def backward_factor(m: SphereMoments, variance: float, eps: float = 0.0, zero_sum: bool = True) -> float:
    """||dL/dh||^2 / ||dL/dx||^2 through BatchNorm + activation (module docstring; Yang et al. 2019).

    Args:
        m: the sphere moments of the (affine-folded) activation after the BatchNorm.
        variance: v = q_h - k_h, the expected variance of the BatchNorm's input across the batch.
        eps: BatchNorm's eps, added to the variance (an approximation, exact when eps << v).
        zero_sum: whether dL/dx sums to zero over the batch (its covariance is proportional to
            P: below another BatchNorm), else it is uncorrelated across samples (covariance ~ I: a
            per-sample loss right above), which gives [(B-1) m2 - m2h] / ((B-3) v).
    """
    v = variance + eps
    if v <= 0:
        raise ConfigError(f"BatchNorm input has no variance across the batch (v = {variance:g}): nothing to normalise.")
    if m.batch is None:
        return m.m2 / v
    b = m.batch
    if not zero_sum:
        return ((b - 1) * m.m2 - m.m2h) / ((b - 3) * v)
    return ((b - 1) * m.m2 + m.m11 - m.m2h + m.mh11) / ((b - 3) * v)


def growth(act: Activation, batch: int | None) -> float:
    """Per-layer growth of ||dL/dh||^2 in a deep Linear-BatchNorm-phi chain with equal widths.

    The BatchNorm backward factor times the next layer's sigma_w^2 times the batch variance of h,
    which sigma_w^2 (1 - ...) cancels: growth = [(B-1) m2 + m11 - m2h + mh11] / ((B-3)(p2 - p11)).

    Example:
        >>> from graddoctor.theory.activations import from_name
        >>> round(growth(from_name("relu"), None), 4)      # pi / (pi - 1)
        1.4669
    """
    m = sphere_moments(act, batch)
    return backward_factor(m, m.p2 - m.p11)
