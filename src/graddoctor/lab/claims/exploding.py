"""C8: exploding gradients are the mirror problem, found by the same instruments and treated by gradient clipping."""

from __future__ import annotations

from typing import Any

from ... import theory
from ...diagnosis import diagnose
from ..results import Results, mean_spread
from ...train.spec import NetSpec, run_spec
from ..study import Settings
from ._common import WIDTH, Claim, axes, decades, first_last, log10_spread, mean_curve, pm, sgd, verdict_of

DEPTH, SIGMA_W2, CLIP = 20, 3.0, 1.0
FLAGS = ("exploding_gradient", "nonfinite")


def runs(settings: Settings) -> list:
    net = NetSpec(depth=DEPTH, width=WIDTH, init="normal", sigma_w2=SIGMA_W2)
    return [run_spec(f"c8/relu-sw{SIGMA_W2:g}-{'clip' if clip else 'noclip'}/s{k}", net=net, train=sgd(settings, clip=clip),
                     seed=k, claim="C8", clip=bool(clip)) for clip in (None, CLIP) for k in range(settings.seeds)]


def _kinds(view: Any) -> list[str]:
    return sorted({str(f.kind.value) for f in diagnose(view).findings})


def judge(results: Results, settings: Settings) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    free, clipped = results.select(claim="C8", clip=False), results.select(claim="C8", clip=True)
    kinds = {"no_clip": [_kinds(r.view()) for r in free], "clip": [_kinds(r.view()) for r in clipped]}
    ratio = log10_spread([first_last(r.view()) for r in free])
    numbers = {"first_over_last_log10_at_init": ratio, "chi1_theory": theory.chi1("relu", SIGMA_W2, 0.0),
               "diverged": {"no_clip": [r.metrics["diverged"] for r in free], "clip": [r.metrics["diverged"] for r in clipped]},
               "test_accuracy": {"no_clip": mean_spread([r.metric("test_accuracy") for r in free]),
                                 "clip": mean_spread([r.metric("test_accuracy") for r in clipped])},
               "diagnosis": kinds, "clip_norm": CLIP}
    found = all(any(k in FLAGS for k in ks) for ks in kinds["no_clip"])
    rescued = not any(numbers["diverged"]["clip"]) and all(v is not None and v >= 0.5 for v in numbers["test_accuracy"]["clip"]["values"])
    verdict = verdict_of(supported=found and ratio["mean"] >= 1 and rescued, refuted=not found)
    n = len(free)
    summary = (f"ReLU depth {DEPTH}, sigma_w^2 = {SIGMA_W2:g} (chi_1 = {numbers['chi1_theory']:.2f}): first/last ||dL/dh|| at "
               f"init {decades(ratio)}; without clipping {sum(numbers['diverged']['no_clip'])}/{n} seeds diverge and "
               f"graddoctor.diagnose flags {'/'.join(FLAGS)} in {sum(any(k in FLAGS for k in ks) for ks in kinds['no_clip'])}/{n}; "
               f"clipped to norm {CLIP:g}: test accuracy {pm(numbers['test_accuracy']['clip'])}")
    every = max(1, free[0].spec.train.steps // 100)
    figure = {"no clip": mean_curve(free, every=every), f"clip {CLIP:g}": mean_curve(clipped, every=every), "every": every}
    return verdict, numbers, summary, figure


def figure(data: dict[str, Any]) -> tuple[Any, str]:
    from ...reporting.figures import overlay

    fig, (ax,) = axes()
    curves = {k: ([i * data["every"] for i in range(len(v))], [float("nan") if x is None else x for x in v])
              for k, v in data.items() if k != "every"}
    overlay(curves, ylabel="training loss", logy=True, title=f"ReLU depth {DEPTH}, sigma_w^2 = {SIGMA_W2:g}", ax=ax)
    return fig, ("Training loss (mean over seeds; gaps: NaN/Inf). Initialised in the chaotic phase, the gradient grows toward "
                 "the input and plain SGD diverges; clipping the global gradient norm keeps training finite.")


C8 = Claim(
    "C8", "Other causes of slow training include poor activations: vanishing or exploding gradients.",
    "supported when graddoctor.diagnose flags exploding_gradient or nonfinite in every unclipped seed of a ReLU MLP "
    "initialised with sigma_w^2 = 3, its first/last gradient ratio at init is at least 10, and with clipping every seed "
    "trains without diverging to test accuracy 0.5 or more; refuted when the diagnosis finds nothing; qualified otherwise",
    runs, judge, figure)
