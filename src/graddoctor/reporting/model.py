"""What a report shows, as data: the run, its diagnosis and the figures it can draw (no markup here).

`build(run)` decides which figures a run supports; a figure it cannot draw carries a note saying
what was not recorded and how to record it, so the page says so instead of silently skipping.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from ..diagnosis import Diagnosis, diagnose
from ..store.view import RunView
from . import figures
from ._axes import weight_layers


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure of a report: `draw()` returns its Axes, or `draw` is None and `missing` says why."""

    title: str
    caption: str
    draw: Callable[[], Any] | None
    missing: str = ""


@dataclasses.dataclass(frozen=True)
class RunReport:
    """A run with its diagnosis and the figures to draw, in reading order."""

    run: RunView
    diagnosis: Diagnosis
    figures: tuple[FigureSpec, ...]


def build(run: RunView, *, prediction: Any = None) -> RunReport:
    """Diagnose `run` and plan its figures (nothing is drawn yet)."""
    diagnosis = diagnose(run, prediction=prediction) if len(run.steps) else _empty_diagnosis(run)
    return RunReport(run, diagnosis, tuple(figure_plan(run, prediction)))


def _empty_diagnosis(run: RunView) -> Diagnosis:
    # diagnose() refuses a run with no step; a report still shows its layers and configuration.
    return Diagnosis(
        run={"name": run.name, "status": run.status, "path": run.path, "n_steps": 0, "n_layers": len(run.layer_info)},
        findings=(),
        layers=tuple({"name": i.name, "type": i.type, "kind": i.kind, "n_params": i.n_params} for i in run.layer_info),
        notes=("no step recorded yet: nothing to diagnose; train at least one step inside graddoctor.watch(...).",),
    )


def figure_plan(run: RunView, prediction: Any = None) -> list[FigureSpec]:
    """Every figure of the single-run report, each drawable or with a note saying what is missing."""
    stats, scalars = set(run.stats), set(run.scalars)
    plan = [
        _spec(run, "Gradient flow", "||dL/d output|| (solid) and ||dL/dW|| (dashed) per layer at the first and the "
              "last recorded step, log scale: a slope down toward the input is a vanishing gradient.",
              {"out_grad_norm", "grad_norm"} & stats,
              lambda: figures.gradient_flow(run, prediction=prediction), "no gradient norm was recorded"),
        _spec(run, "Back-propagated gradient, layer x step", "||dL/d output|| of each layer with parameters over training, log colour "
              "(grey: not recorded, magenta: NaN/Inf, blue: exactly 0).", {"out_grad_norm"} & stats,
              lambda: figures.heatmap(run, "out_grad_norm", layers=weight_layers(run)), "out_grad_norm was not recorded"),
        _spec(run, "Update ratio", "||dW||/||W|| per layer and step, log scale; the dashed line is the ~1e-3 rule "
              "of thumb.", {"update_ratio", "update_ratio_est"} & stats, lambda: figures.update_ratio(run),
              "update_ratio was not recorded (watch with an optimizer, update_ratio=\"sample\" or \"exact\")"),
        _spec(run, "Dead and saturated units", "fraction of units per activation layer that never fired (dead, solid)"
              " or sat in the flat part of their nonlinearity (saturated, dashed).",
              {"dead_frac", "saturated_frac"} & stats, lambda: figures.unit_fractions(run),
              "no dead or saturated fraction was recorded (they are measured on activation layers)"),
        _spec(run, "Loss", "the logged loss per recorded step (red ticks: NaN/Inf).", {"loss"} & scalars,
              lambda: figures.loss_curve(run), "no loss was logged: call run.log(loss=loss) after optimizer.step()"),
    ]
    for layer in run.time_layers("in_grad_norm_t"):  # recurrent layers only: no entry for other models
        plan.append(_spec(run, f"Gradient through time: {layer}", "||dL/dx_t|| at the layer's input per time step t "
                          "(log) at the first, middle and last recorded step (ticks at the bottom: exactly 0).",
                          {"time"}, lambda layer=layer: figures.time_profile(run, layer), ""))
        plan.append(_spec(run, f"Time step x training step: {layer}", "||dL/dx_t|| per time step (rows) and training "
                          "step (columns), log colour; blue: exactly 0.", {"time"},
                          lambda layer=layer: figures.time_heatmap(run, layer), ""))
    for kind, title in (("act", "Activation histograms"), ("grad", "Gradient histograms")):
        has = any(run.hist(name, kind) for name in run.layers)
        plan.append(_spec(run, title, f"per-layer {'output' if kind == 'act' else 'parameter-gradient'} histograms at "
                          "the last histogram step, each over its own range (Glorot & Bengio 2010).",
                          {kind} if has else set(), lambda kind=kind: figures.histograms(run, kind),
                          "no histogram was recorded: watch(..., hist_every=N)"))
    return plan


def _spec(run: RunView, title: str, caption: str, present: set[str], draw: Callable[[], Any], missing: str) -> FigureSpec:
    if len(run.steps) == 0:
        return FigureSpec(title, caption, None, "no step recorded yet")
    return FigureSpec(title, caption, draw if present else None, "" if present else missing)
