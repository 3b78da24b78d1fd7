"""C7: is Batch Normalization a remedy? Deep sigmoid +- BN, and the gradient explosion of a deep BN-ReLU MLP at init."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...theory import activations, batchnorm
from ..results import Results, mean_spread
from ...train.spec import NetSpec, run_spec
from ..study import Settings
from ._common import AT_INIT, WIDTH, Claim, axes, decades, first_last, geo_profile, log10_spread, mean_curve, pm, sgd, verdict_of, weight_layers
from .vanishing import DEEP, SIGMOID_LR

BN_DEPTH, BATCH, SMALL_BATCH = 30, 64, 8


def runs(settings: Settings) -> list:
    out = [run_spec(f"c7/sigmoid-bn-depth{DEEP}/s{k}", net=NetSpec(depth=DEEP, width=WIDTH, activation="sigmoid", norm="batch"),
                    train=sgd(settings, lr=SIGMOID_LR), seed=k, claim="C7", variant="sigmoid_bn") for k in range(settings.seeds)]
    out += [run_spec(f"c7/relu-bn-{'residual' if res else 'plain'}-depth{BN_DEPTH}/s{k}",
                     net=NetSpec(depth=BN_DEPTH, width=WIDTH, norm="batch", residual=res, init="he"), train=AT_INIT,
                     seed=k, claim="C7", variant="residual" if res else "plain") for res in (False, True)
            for k in range(settings.seeds)]
    out += [run_spec(f"c7/relu-bn-plain-depth{BN_DEPTH}-batch{SMALL_BATCH}/s{k}", net=NetSpec(depth=BN_DEPTH, width=WIDTH, norm="batch", init="he"),
                     train=dataclasses.replace(AT_INIT, batch=SMALL_BATCH), seed=k, claim="C7", variant="plain_small_batch")
            for k in range(settings.seeds)]
    return out


def growth(view: Any) -> float:
    """Measured per-layer growth of ||dL/dh||^2 toward the input over the hidden Linear layers at init (geometric mean)."""
    g = np.array([view.stat("out_grad_norm", name)[0] for name in _linears(view)][:-1])
    return float((g[0] / g[-1]) ** (2 / (len(g) - 1)))


def _linears(view: Any) -> list[str]:
    """The weight layers (the depth profile's, by stored role): the Linear layers of these MLPs."""
    return weight_layers(view)


def judge(results: Results, settings: Settings) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    plain_sig, bn_sig = results.select(claim="C2", variant="deep"), results.select(claim="C7", variant="sigmoid_bn")
    acc = {"sigmoid": mean_spread([r.metric("test_accuracy") for r in plain_sig]),
           "sigmoid_bn": mean_spread([r.metric("test_accuracy") for r in bn_sig])}
    views = {v: [r.view() for r in results.select(claim="C7", variant=v)] for v in ("plain", "residual", "plain_small_batch")}
    grow = {v: mean_spread([growth(x) for x in vs]) for v, vs in views.items()}
    ratio = {v: log10_spread([first_last(x) for x in vs]) for v, vs in views.items()}
    theory = batchnorm.growth(activations.from_name("relu"), BATCH)
    theory_small = batchnorm.growth(activations.from_name("relu"), SMALL_BATCH)
    numbers = {"test_accuracy_depth20": acc, "bn_relu_growth_per_layer": grow, "bn_relu_growth_theory": theory,
               "bn_relu_growth_theory_small_batch": theory_small, "first_over_last_log10": ratio, "depth": BN_DEPTH,
               "batch": BATCH, "small_batch": SMALL_BATCH}
    helps = acc["sigmoid_bn"]["mean"] - acc["sigmoid"]["mean"] >= 0.3
    explodes = grow["plain"]["mean"] >= 1.2
    verdict = verdict_of(supported=helps and not explodes, refuted=not helps)
    summary = (f"depth {DEEP} sigmoid test accuracy {pm(acc['sigmoid'])} without BN, {pm(acc['sigmoid_bn'])} with BN; "
               f"depth-{BN_DEPTH} BN-ReLU MLP at init: ||dL/dh||^2 grows x{pm(grow['plain'], 3)} per layer toward the input "
               f"(theory {theory:.3f}, Yang et al.), first/last {decades(ratio['plain'])}; with residual connections "
               f"x{pm(grow['residual'], 3)}, first/last {decades(ratio['residual'])}; at batch {SMALL_BATCH} the plain net "
               f"grows x{pm(grow['plain_small_batch'], 3)} per layer (theory {theory_small:.3f})")
    every = max(1, plain_sig[0].spec.train.steps // 100)
    figure = {"loss": {"sigmoid": mean_curve(plain_sig, every=every), "sigmoid + BN": mean_curve(bn_sig, every=every)},
              "every": every, "profile": {v: geo_profile(vs) for v, vs in views.items()}, "theory": theory}
    return verdict, numbers, summary, figure


def figure(data: dict[str, Any]) -> tuple[Any, str]:
    from ...reporting.figures import overlay

    fig, (a, b) = axes(2)
    curves = {k: ([i * data["every"] for i in range(len(v))], v) for k, v in data["loss"].items()}
    overlay(curves, ylabel="training loss", title=f"Depth-{DEEP} sigmoid MLP, SGD", ax=a)
    names = {"plain": f"plain, batch {BATCH}", "residual": f"residual, batch {BATCH}", "plain_small_batch": f"plain, batch {SMALL_BATCH}"}
    prof = {f"BN-ReLU {names[k]}": (list(range(1, len(v) + 1)), v) for k, v in data["profile"].items()}
    plain = data["profile"]["plain"]
    n = len(plain) - 1
    prof[f"theory x{data['theory']:.2f}/layer"] = (list(range(1, n + 1)),
                                                    [plain[n - 1] * data["theory"] ** ((n - 1 - i) / 2) for i in range(n)])
    overlay(prof, xlabel="Linear layer (1 = input side)", ylabel="||dL/dh|| at init", logy=True,
            title=f"Depth-{BN_DEPTH} BN-ReLU MLP at init", ax=b)
    return fig, ("Left: BatchNorm makes the deep sigmoid MLP trainable. Right: in a plain deep BN-ReLU MLP the gradient "
                 "grows by a constant factor per layer toward the input at initialisation (mean-field theory's "
                 "prediction for batch 64 beside it), faster with a smaller batch; residual connections remove most of the growth.")


C7 = Claim(
    "C7", "Batch Normalization is a remedy for vanishing gradients.",
    "qualified when BN raises the deep sigmoid MLP's mean test accuracy by at least 0.3 while a deep plain BN-ReLU MLP's "
    "||dL/dh||^2 grows at least 1.2x per layer toward the input at init (the residual version is measured beside it); "
    "supported "
    "when BN helps and no such growth is measured; refuted when BN does not help",
    runs, judge, figure)
