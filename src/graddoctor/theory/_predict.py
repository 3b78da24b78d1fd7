"""`graddoctor.predict`: gradient flow at initialization predicted from mean-field theory.

What is predicted is `out_grad_norm`: ||dL/dh|| of each Linear/Conv output h, the pre-activation
gradient, relative to the last predicted layer. Weight-gradient norms (`grad_norm`) need not
follow it: ||dW||^2 = sum_{b,b'} (g_b . g_b')(x_b . x_b') has B^2 cross-sample terms that dominate
when per-sample gradients point alike and inputs are correlated (a depth-10 He-init ReLU MLP whose
loss projects all outputs on one random vector keeps ||dL/dh||^2 level, 1.00 per layer, while
||dW||^2 shrinks 0.64 per layer toward the input; benchmarks/theory_vs_measured.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections import Counter
from typing import Any

from ..errors import ConfigError
from .._validate import MAX_BATCH, MAX_DEPTH, ArgumentTypeError, check_int, check_number
from . import batchnorm, meanfield
from .activations import from_name
from .propagate import DOWNSTREAM, Pass, run
from ._fx import read_model
from .spec import Op, ModelSpec, mlp_spec

NOTE_QUANTITY = ("predictions are about out_grad_norm (||dL/dh|| at each Linear/Conv output, the pre-activation "
                 "gradient) at initialization in the wide limit; weight-gradient norms (grad_norm) do not follow them")


@dataclasses.dataclass(frozen=True)
class LayerPrediction:
    """One Linear/Conv layer. factor = predicted ||dL/dh_l||^2 / ||dL/dh_{l+1}||^2 (l+1: the next
    Linear/Conv toward the output); in a plain chain it is Poole et al.'s chi_1 at this layer's q."""

    name: str
    type: str
    sigma_w2: float
    sigma_b2: float
    q: float                          # predicted second moment of the layer's output (pre-activation variance)
    factor: float | None
    rel_out_grad_norm: float | None   # ||dL/dh_l|| / ||dL/dh|| of the last predicted layer


@dataclasses.dataclass(frozen=True)
class Summary:
    """Fixed-point theory of the model's typical hidden block (most common activation, median sigmas)."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    scales: meanfield.DepthScales
    critical_sigma_w2: float | None     # at this sigma_b2; None where none exists (or with BatchNorm)
    bn_growth: float | None             # per-layer ||dL/dh||^2 growth of Linear-BatchNorm-act blocks


@dataclasses.dataclass(frozen=True, repr=False)
class Prediction:
    """What mean-field theory expects of a model's gradients at initialization. Data; print it.

    Attributes:
        layers: one entry per predicted Linear/Conv layer, input side first.
        uncovered: (name, type, reason) of the parts the theory does not cover; layers past them
            (toward the output) are not predicted.
        summary: the fixed-point view (phase, chi_1, depth scales, critical init), or None.
        mean_factor: geometric mean of the per-layer factors: ||dL/dh||^2 changes by this per layer.
        input_q: the input's second moment used; batch: the batch size BatchNorm was predicted for.
    """

    layers: tuple[LayerPrediction, ...]
    uncovered: tuple[tuple[str, str, str], ...]
    summary: Summary | None
    mean_factor: float | None
    input_q: float
    batch: int | None
    notes: tuple[str, ...]

    @property
    def covered(self) -> bool:
        """True when the theory covers every part of the model."""
        return not self.uncovered

    @property
    def phase(self) -> str | None:
        """'ordered' (vanishing), 'critical' or 'chaotic' (exploding), from mean_factor."""
        return None if self.mean_factor is None else meanfield.phase(self.mean_factor)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: infinities become the strings "inf"/"-inf", undefined values None."""
        data = dataclasses.asdict(self)
        data["phase"], data["covered"] = self.phase, self.covered
        data["uncovered"] = [dict(zip(("name", "type", "reason"), u)) for u in self.uncovered]
        return _jsonable(data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def __repr__(self) -> str:
        from ._render import render

        return render(self)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return ("inf" if x > 0 else "-inf") if math.isinf(x) else (None if math.isnan(x) else x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def predict(model: Any, input_shape: tuple[int, ...] | None = None, batch: int | None = None, *, inputs: Any = None) -> Prediction:
    """Predict the per-layer pre-activation gradient norms of `model` at initialization.

    Example:
        >>> model = torch.nn.Sequential(*[m for _ in range(10) for m in (torch.nn.Linear(64, 64), torch.nn.Tanh())])
        >>> p = graddoctor.predict(model)
        >>> p.phase, round(p.mean_factor, 2)                        # doctest: +SKIP
        ('ordered', 0.3)

    Args:
        model: an nn.Module of Linear/Conv layers, elementwise activations, BatchNorm1d, LayerNorm,
            dropout and residual additions (traced with torch.fx; the rest is reported as uncovered).
        input_shape: shape of one sample without the batch dimension; needed unless the first
            layer is a Linear or `inputs` is given.
        batch: batch size, for the finite-batch BatchNorm theory (default: len(inputs), else the
            infinite-batch limit).
        inputs: an example batch; its second moments start the forward pass (default: i.i.d.
            standardised inputs, second moment 1, uncorrelated samples).

    Raises:
        ConfigError: not a module, an input shape that does not fit, a batch below 5.
    """
    check_int("batch", batch, minimum=1, maximum=MAX_BATCH, optional=True)
    if input_shape is not None:
        if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
            raise ArgumentTypeError(f"input_shape must be a tuple of positive integers, got {input_shape!r}.")
        input_shape = tuple(check_int("input_shape entry", n, minimum=1, maximum=MAX_BATCH) for n in input_shape)
    q0, k0 = 1.0, 0.0
    notes = []
    if inputs is not None:
        q0, k0, input_shape, batch = _input_stats(inputs, batch)
    else:
        notes.append("inputs not given: assumed i.i.d. with second moment 1 per element (pass inputs=a batch)")
    spec = read_model(model, input_shape)
    if any(s.kind == Op.BATCHNORM for s in spec.layers) and batch is None:
        notes.append("batch not given: BatchNorm predicted at the infinite-batch limit (pass batch=)")
    return predict_spec(spec, input_q=q0, input_k=k0, batch=batch, notes=tuple(notes))


def predict_mlp(activation: Any, sigma_w2: float, sigma_b2: float, depth: int, *, input_q: float = 1.0) -> Prediction:
    """The prediction for a plain MLP of `depth` Linear layers with this activation and init.

    Example:
        >>> p = predict_mlp("tanh", 1.5, 0.05, depth=50)
        >>> p.summary.scales.phase
        'ordered'
    """
    if isinstance(depth, int) and depth > MAX_DEPTH:  # the spec's own checks give the other messages
        check_int("depth", depth, maximum=MAX_DEPTH)
    check_number("sigma_w2", sigma_w2, optional=True)
    check_number("sigma_b2", sigma_b2, optional=True)
    meanfield._check(sigma_w2, sigma_b2)
    return predict_spec(mlp_spec(activation, sigma_w2, sigma_b2, depth), input_q=input_q)


def _input_stats(inputs: Any, batch: int | None) -> tuple[float, float, tuple[int, ...], int | None]:
    import torch

    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2 or inputs.shape[0] < 1:
        raise ConfigError(f"inputs must be a tensor of shape (batch, ...), got {getattr(inputs, 'shape', type(inputs).__name__)}.")
    x = inputs.detach().double().reshape(inputs.shape[0], -1)
    n, d = x.shape
    q0 = float(x.pow(2).mean())
    total = x.sum(0)
    k0 = float((total.dot(total) - x.pow(2).sum()) / (n * (n - 1) * d)) if n > 1 else 0.0
    if not (q0 > 0 and math.isfinite(q0)):
        raise ConfigError(f"inputs must have a positive, finite second moment, got {q0!r}.")
    return q0, k0, tuple(inputs.shape[1:]), batch if batch is not None else n


def predict_spec(spec: ModelSpec, *, input_q: float = 1.0, input_k: float = 0.0, batch: int | None = None,
                 notes: tuple[str, ...] = ()) -> Prediction:
    """The prediction for a `ModelSpec` (see `spec.read_model`, `spec.mlp_spec`)."""
    has_bn = any(s.kind == Op.BATCHNORM for s in spec.layers)
    if has_bn:
        batchnorm._check_batch(batch)
    result = run(spec, input_q, input_k, batch if has_bn else None)
    layers = _layers(spec, result)
    logs = [math.log(lp.rel_out_grad_norm**2) for lp in layers if lp.rel_out_grad_norm]
    mean_factor = math.exp((logs[0] - logs[-1]) / (len(logs) - 1)) if len(logs) > 1 else None
    uncovered = tuple((s.name, s.type, why) for s, why in zip(spec.layers, result.reasons)
                      if why and why != DOWNSTREAM)
    missing = len(spec.dense) - len(layers)
    if missing:
        notes = tuple(notes) + (f"{missing} Linear/Conv layer(s) past the uncovered parts are not predicted",)
    return Prediction(tuple(layers), uncovered, _summary(spec, batch), mean_factor, input_q, batch,
                      tuple(notes) + (NOTE_QUANTITY,))


def _layers(spec: ModelSpec, result: Pass) -> list[LayerPrediction]:
    dense = [i for i in spec.dense if result.grad2[i] is not None]
    if not dense:
        return []
    ref = result.grad2[dense[-1]]
    out = []
    for n, i in enumerate(dense):
        s, g = spec.layers[i], result.grad2[i]
        factor = g / result.grad2[dense[n + 1]] if n + 1 < len(dense) and result.grad2[dense[n + 1]] else None
        rel = math.sqrt(g / ref) if ref > 0 else None
        out.append(LayerPrediction(s.name, s.type, s.sigma_w2, s.sigma_b2, result.signals[i].q, factor, rel))
    return out


def _summary(spec: ModelSpec, batch: int | None) -> Summary | None:
    """Fixed-point quantities for the typical hidden block: most common activation, median sigmas."""
    acts = [s.activation.name for s in spec.layers if s.kind == Op.ACTIVATION]
    dense = [spec.layers[i] for i in spec.dense]
    if not dense:
        return None
    hidden = dense[1:] or dense
    act = from_name(Counter(acts).most_common(1)[0][0] if acts else "identity")
    sw2 = statistics.median(s.sigma_w2 for s in hidden)
    sb2 = statistics.median(s.sigma_b2 for s in hidden)
    if sw2 <= 0:
        return None
    scales = meanfield.depth_scales(act, sw2, sb2)
    has_bn = any(s.kind == Op.BATCHNORM for s in spec.layers)
    try:
        critical = None if has_bn else meanfield.critical_sigma_w2(act, sb2)
    except ConfigError:
        critical = None
    return Summary(act.name, sw2, sb2, scales, critical, batchnorm.growth(act, batch) if has_bn else None)
