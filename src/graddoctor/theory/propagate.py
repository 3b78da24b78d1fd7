"""Mean-field forward and backward passes over a `ModelSpec`, at finite depth.

Forward: each op's output gets a `Signal` (per-sample second moment q, cross-sample second moment
k), starting from the actual input statistics, so layers far from the fixed point q* are
predicted along their real trajectory (Poole et al. 2016, eq. 3 applied layer by layer).
Backward: the squared norm of dL/d(output) of every op relative to a reference, multiplying the
per-op factors (Schoenholz et al. 2017, eq. 13-14, with the gradient-independence assumption):

    Dense        ||dL/dx||^2 = sigma_w^2 * border * ||dL/dh||^2
    activation   ||dL/dh||^2 = E[phi'(sqrt(q) z)^2] ||dL/dx||^2
    BatchNorm    the finite-batch factor of `batchnorm` (with the activation after it)
    LayerNorm    ||dL/dh||^2 = gamma^2 (N-2) / ((N-3)(q + eps)) ||dL/dy||^2
    x + f(x)     both inputs get the sum's gradient; a fan-out adds squared norms (the cross term
                 has a zero-mean weight in it), so variance and gradient accumulate across blocks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import batchnorm
from .activations import Activation, cross_moment, deriv_second_moment, from_name, second_moment
from .spec import Op, LayerSpec, ModelSpec


DOWNSTREAM = "downstream of an op the theory does not cover"


@dataclasses.dataclass(frozen=True)
class Signal:
    """Mean-field state of one op's output. k is None when no BatchNorm needs it.

    gaussian: a zero-mean Gaussian over the random weights (what an activation's moments assume).
    proj: the Dense ops summed directly into it (None once a nonlinearity intervenes); deps: every
    Dense op it depends on. Two summands are uncorrelated when one has a Dense op in proj that the
    other does not depend on (the zero-mean weights kill the cross term).
    """

    q: float
    k: float | None
    gaussian: bool
    proj: frozenset[int] | None
    deps: frozenset[int]
    sphere: tuple[float, float, float, float] | None = None   # after BatchNorm: (gain, shift, q_h, k_h)


@dataclasses.dataclass(frozen=True)
class Pass:
    """Result of the passes: per-op signal (None: unknown), relative ||dL/d out||^2, what stopped them."""

    signals: tuple[Signal | None, ...]
    grad2: tuple[float | None, ...]
    reasons: tuple[str, ...]         # per op: why its signal is unknown ('' when known)
    anchor: int | None               # the op whose output gradient is the reference (grad2 = 1)


def run(spec: ModelSpec, q0: float = 1.0, k0: float = 0.0, batch: int | None = None) -> Pass:
    """Forward from inputs with second moment q0 (cross-sample k0), then backward from the anchor."""
    need_k = any(s.kind == Op.BATCHNORM for s in spec.layers)
    cache: dict = {}
    signals: list[Signal | None] = []
    reasons: list[str] = []
    for spec_i in spec.layers:
        ins = [signals[j] for j in spec_i.inputs]
        if spec_i.kind == Op.UNCOVERED:
            signals.append(None)
            reasons.append(spec_i.reason)
            continue
        if spec_i.kind != Op.INPUT and (not ins or any(s is None for s in ins)):
            signals.append(None)
            reasons.append(DOWNSTREAM)
            continue
        sig, why = _forward(spec_i, len(signals), ins, q0, k0 if need_k else None, batch, cache)
        signals.append(sig)
        reasons.append(why)
    anchor = _anchor(spec, signals)
    grad2 = _backward(spec, signals, anchor, batch, cache)
    return Pass(tuple(signals), tuple(grad2), tuple(reasons), anchor)


def _forward(s: LayerSpec, i: int, ins: list, q0: float, k0: float | None, batch, cache) -> tuple[Signal | None, str]:
    if s.kind == Op.INPUT:
        return Signal(q0, k0, True, None, frozenset()), ""
    x = ins[0]
    if s.kind == Op.DENSE:
        gain = s.sigma_w2 * s.border
        k = None if x.k is None else gain * x.k + s.sigma_b2
        return Signal(gain * x.q + s.sigma_b2, k, True, frozenset({i}), x.deps | {i}), ""
    if s.kind == Op.ACTIVATION:
        return _activation(s.activation, x, batch, cache)
    if s.kind == Op.BATCHNORM:
        if not x.gaussian or x.k is None or x.q - x.k <= 0:
            return None, "BatchNorm not directly after a Linear layer (its input must be a zero-mean Gaussian with variance across the batch)"
        k = s.gain**2 * (-1.0 / (batch - 1) if batch else 0.0) + s.shift**2
        return Signal(s.gain**2 + s.shift**2, k, False, None, x.deps, (s.gain, s.shift, x.q, x.k)), ""
    if s.kind == Op.LAYERNORM:
        if not x.gaussian:
            return None, "LayerNorm of a non-Gaussian signal (e.g. right after an activation) is not covered"
        c = None if x.k is None else x.k / x.q
        k = None if c is None else s.gain**2 * c + s.shift**2
        return Signal(s.gain**2 + s.shift**2, k, s.shift == 0, None, x.deps), ""
    if s.kind == Op.ADD:
        return _add(ins)
    if s.kind == Op.SCALE:
        k = None if x.k is None else x.k * s.cross
        return Signal(x.q * s.forward, k, x.gaussian and s.keeps_gaussian, x.proj if s.keeps_gaussian else None, x.deps), ""
    return x, ""  # PASS, OUTPUT


def _activation(act: Activation, x: Signal, batch: int | None, cache: dict) -> tuple[Signal | None, str]:
    if x.sphere is not None:
        m = _sphere(act, x.sphere, batch, cache)
        return Signal(m.p2, m.p11, False, None, x.deps), ""
    if act.name == "identity":
        return x, ""
    if not x.gaussian:
        return None, f"{act.name} applied to a signal that is not a zero-mean Gaussian (two nonlinearities in a row, or after dropout/a norm with a bias)"
    q = max(x.q, 1e-300)
    p = float(second_moment(act, np.array([q]))[0])
    k = None if x.k is None else cross_moment(act, q, q, float(np.clip(x.k / q, -1, 1)))
    return Signal(p, k, False, None, x.deps), ""


def _sphere(act: Activation, sphere: tuple[float, float, float, float], batch: int | None, cache: dict):
    key = (act.name, sphere[0], sphere[1], batch)
    if key not in cache:
        cache[key] = batchnorm.sphere_moments(batchnorm.folded(act, sphere[0], sphere[1]), batch)
    return cache[key]


def _add(ins: list[Signal]) -> tuple[Signal | None, str]:
    a, b = ins
    independent = (a.proj is not None and not a.proj & b.deps) or (b.proj is not None and not b.proj & a.deps)
    if not independent:
        return None, "adds two correlated signals (neither summand ends in a Linear/Conv the other does not depend on)"
    k = None if a.k is None or b.k is None else a.k + b.k
    proj = a.proj | b.proj if a.proj is not None and b.proj is not None else None
    return Signal(a.q + b.q, k, a.gaussian and b.gaussian, proj, a.deps | b.deps), ""


def _anchor(spec: ModelSpec, signals: list[Signal | None]) -> int | None:
    """The reference op: the model output's input, or the input of the first op the theory stops at."""
    for i, s in enumerate(spec.layers):
        if signals[i] is None:
            known = [j for j in s.inputs if signals[j] is not None]
            if known:
                return known[0] if len(known) == 1 else None
        elif s.kind == Op.OUTPUT:
            return s.inputs[0]
    return None


def _backward(spec: ModelSpec, signals, anchor: int | None, batch, cache) -> list[float | None]:
    """||dL/d out||^2 of every op relative to the anchor's, in reverse forward order.

    Also tracks whether each op's output gradient sums to zero over the batch (true below a
    BatchNorm until an activation mixes samples unevenly): BatchNorm's factor depends on it. The
    anchor's gradient is taken as uncorrelated across samples (a per-sample loss).
    """
    n = len(spec.layers)
    grad2: list[float | None] = [None] * n
    if anchor is None:
        return grad2
    acc: list[float | None] = [0.0] * n
    acc[anchor] = 1.0
    zero_sum = [True] * n
    zero_sum[anchor] = False
    consumers: list[list[int]] = [[] for _ in range(n)]
    for i, s in enumerate(spec.layers):
        for j in s.inputs:
            consumers[j].append(i)
    for i in range(anchor, -1, -1):
        if i != anchor and any(c > anchor for c in consumers[i]):
            acc[i] = None  # part of its gradient arrives through ops beyond the reference
        if acc[i] is None or signals[i] is None:
            for j in spec.layers[i].inputs:
                acc[j] = None
            continue
        grad2[i] = acc[i]
        for j, factor, sums_to_zero in _factors(spec, i, signals, batch, cache, zero_sum):
            if acc[j] is not None:
                acc[j] = None if factor is None else acc[j] + factor * acc[i]
            zero_sum[j] = zero_sum[j] and sums_to_zero
    return grad2


def _factors(spec: ModelSpec, i: int, signals, batch, cache, zero_sum: list[bool]) -> list[tuple[int, float | None, bool]]:
    """(input position, ||dL/d input||^2 / ||dL/d output||^2, input gradient sums to zero) for op i."""
    s = spec.layers[i]
    keep = zero_sum[i]
    if s.kind == Op.DENSE:
        return [(s.inputs[0], s.sigma_w2 * s.border, keep)]
    if s.kind == Op.ACTIVATION:
        x = signals[s.inputs[0]]
        if x.sphere is not None:
            return [(s.inputs[0], 1.0, False)]  # after BatchNorm, the BatchNorm op carries phi' (Yang et al.)
        if s.activation.name == "identity":
            return [(s.inputs[0], 1.0, keep)]
        return [(s.inputs[0], float(deriv_second_moment(s.activation, np.array([x.q]))[0]), False)]
    if s.kind == Op.BATCHNORM:
        return [(s.inputs[0], _batchnorm_factor(spec, i, signals, batch, cache, zero_sum), True)]
    if s.kind == Op.LAYERNORM:
        x = signals[s.inputs[0]]
        return [(s.inputs[0], s.gain**2 * (s.features - 2) / ((s.features - 3) * (x.q + s.eps)), False)]
    if s.kind == Op.SCALE:
        return [(s.inputs[0], s.backward, keep and s.keeps_gaussian)]
    return [(j, 1.0, keep) for j in s.inputs]  # ADD, PASS, OUTPUT


def _reader(spec: ModelSpec, i: int) -> int | None:
    """The op that reads op i's output, past reshapes; None when several ops read it."""
    while True:
        users = [u for u, s in enumerate(spec.layers) if i in s.inputs]
        if len(users) != 1:
            return None
        if spec.layers[users[0]].kind != Op.PASS:
            return users[0]
        i = users[0]


def _batchnorm_factor(spec: ModelSpec, i: int, signals, batch, cache, zero_sum: list[bool]) -> float | None:
    """BatchNorm and the activation that reads it, together (Yang et al. 2019); None if shared."""
    reader = _reader(spec, i)
    if reader is None:
        return None
    act = spec.layers[reader].activation if spec.layers[reader].kind == Op.ACTIVATION else from_name("identity")
    gain, shift, q_h, k_h = signals[i].sphere
    m = _sphere(act, signals[i].sphere, batch, cache)
    return batchnorm.backward_factor(m, q_h - k_h, spec.layers[i].eps, zero_sum=zero_sum[reader])
