"""Theory next to measurement: a `Prediction` (graddoctor.theory) held against a recorded run.

Mean-field theory predicts, per Linear/Conv layer, the factor by which ||dL/dh||^2 (the squared
pre-activation gradient, `out_grad_norm`^2) changes from one layer to the next toward the input, at
initialization. The measured factor is read from the run's first recorded step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..store.view import RunView
from .findings import Finding, Kind


@dataclasses.dataclass(frozen=True)
class LayerExpectation:
    name: str
    type: str
    predicted_factor: float | None   # predicted ||dL/dh_l||^2 / ||dL/dh_next||^2
    measured_factor: float | None    # the same ratio, measured at the run's first recorded step


@dataclasses.dataclass(frozen=True)
class Expectation:
    """Predicted vs measured per-layer factors of the squared pre-activation gradient, at init."""

    step: int
    layers: tuple[LayerExpectation, ...]
    predicted_mean: float | None      # geometric mean of the predicted factors
    measured_mean: float | None       # geometric mean of the measured factors over the same layers
    phase: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def expectation(prediction: Any, run: RunView) -> Expectation | None:
    """Per predicted layer, the predicted and the measured factor; None when nothing can be compared."""
    names = set(run.layers)
    layers = [p for p in prediction.layers if p.name in names]
    if len(layers) < 2 or len(run.steps) == 0 or "out_grad_norm" not in run.stats:
        return None
    col = 0
    g = {p.name: run.stat("out_grad_norm", p.name)[col] for p in layers}
    rows = []
    for here, nxt in zip(layers, layers[1:] + [None]):
        measured = None
        if nxt is not None and g[nxt.name] > 0 and math.isfinite(g[here.name]):
            measured = float((g[here.name] / g[nxt.name]) ** 2)
        rows.append(LayerExpectation(here.name, here.type, _num(here.factor), measured))
    pairs = [(r.predicted_factor, r.measured_factor) for r in rows
             if r.predicted_factor and r.measured_factor and r.predicted_factor > 0 and r.measured_factor > 0]
    return Expectation(
        step=int(run.steps[col]),
        layers=tuple(rows),
        predicted_mean=_geomean([p for p, _ in pairs]),
        measured_mean=_geomean([m for _, m in pairs]),
        phase=prediction.phase,
    )


def annotate(finding: Finding, comparison: Expectation) -> Finding:
    """Add what theory expected to a vanishing/exploding finding's evidence and cause."""
    if finding.kind not in (Kind.VANISHING_GRADIENT, Kind.EXPLODING_GRADIENT) or comparison.predicted_mean is None:
        return finding
    expected = math.sqrt(comparison.predicted_mean)
    evidence = dict(finding.evidence)
    evidence["expected_factor_per_layer"] = expected
    sentence = (f" At this initialization mean-field theory expects the gradient norm to change by x{expected:.3g} "
                f"per weight layer ({comparison.phase} phase)")
    if comparison.measured_mean is not None:
        sentence += f"; measured at step {comparison.step}: x{math.sqrt(comparison.measured_mean):.3g}"
        evidence["measured_factor_per_layer_at_init"] = math.sqrt(comparison.measured_mean)
    return dataclasses.replace(finding, evidence=evidence, cause=finding.cause + sentence + ".")


def _geomean(values: list[float]) -> float | None:
    return float(np.exp(np.mean(np.log(values)))) if values else None


def _num(value: Any) -> float | None:
    return None if value is None else float(value)
