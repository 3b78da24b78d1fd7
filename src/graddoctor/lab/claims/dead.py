"""C4, C5, C6: dead ReLU units under a too-high learning rate and a negative bias shift, and LeakyReLU in the same scenarios.

Scenarios (6 Linear layers of width 128):
    high_lr     He init, Adam with lr 0.05 (50x the usual 1e-3): big early steps push units below zero for good
    bias_shift  PyTorch's default init with every hidden bias shifted by -1: most units start below zero
    baseline    He init, Adam with lr 1e-3 (ReLU only): how many units are dead in a healthy run
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..results import Results, mean_spread
from ...train.spec import NetSpec, TrainSpec, run_spec
from ..study import Settings
from ._common import WIDTH, Claim, act_layers, adam, axes, bars, geo_profile, pm, profile, sgd, verdict_of, weight_layers

DEPTH, SLOPE, SHIFT, HIGH_LR = 6, 0.01, -1.0, 0.05
ACTS = ("relu", "leaky_relu")


def _scenarios(settings: Settings) -> dict[str, tuple[dict[str, Any], TrainSpec]]:
    return {"high_lr": ({"init": "he"}, adam(settings, lr=HIGH_LR)),
            "bias_shift": ({"bias_shift": SHIFT}, sgd(settings)),
            "baseline": ({"init": "he"}, adam(settings))}


def runs(settings: Settings) -> list:
    out = []
    for scenario, (net, train) in _scenarios(settings).items():
        for act in (("relu",) if scenario == "baseline" else ACTS):
            spec = NetSpec(depth=DEPTH, width=WIDTH, activation=act, negative_slope=SLOPE, **net)
            out += [run_spec(f"c4/{scenario}-{act}/s{k}", net=spec, train=train, seed=k, claim="C4", scenario=scenario,
                             act=act) for k in range(settings.seeds)]
    return out


def dead_fraction(view: Any, step: int) -> float:
    """Mean over the hidden activation layers of dead_frac (units zero on every sample of the batch) at a recorded step."""
    return float(np.mean([view.stat("dead_frac", name)[step] for name in act_layers(view)])) if act_layers(view) else 0.0


def dead_profile(view: Any, step: int) -> list[float]:
    return [float(view.stat("dead_frac", name)[step]) for name in act_layers(view)]


def grad_below_dead(view: Any, dead_at: int | None) -> float | None:
    """Largest grad_norm at init of the weight layers below the activation layer at position `dead_at` (None: no such layer)."""
    if dead_at is None:
        return None
    below = [name for name in weight_layers(view) if view.layers.index(name) < dead_at]
    return float(max(profile(view, "grad_norm", 0, below))) if below else None


def deepest_dead(view: Any) -> int | None:
    """Position (in view.layers) of the activation layer nearest the output whose units are all dead at init."""
    dead = [view.layers.index(name) for name in act_layers(view) if view.stat("dead_frac", name)[0] >= 1.0]
    return max(dead) if dead else None


def measure(results: Results) -> dict[str, Any]:
    """Everything C4-C6 read, per scenario and activation: dead fractions, gradients below dead layers, accuracy."""
    out: dict[str, Any] = {}
    for scenario in ("high_lr", "bias_shift", "baseline"):
        for act in ACTS:
            recs = results.select(claim="C4", scenario=scenario, act=act)
            if not recs:
                continue
            views = [r.view() for r in recs]
            relu_views = [r.view() for r in results.select(claim="C4", scenario=scenario, act="relu")]
            dead_at = [deepest_dead(v) for v in relu_views]  # same seed: same weights for either activation
            out[f"{scenario}/{act}"] = {
                "dead_fraction_init": mean_spread([dead_fraction(v, 0) for v in views]),
                "dead_fraction_end": mean_spread([dead_fraction(v, -1) for v in views]),
                "fully_dead_layer_at_init": [d is not None for d in dead_at],
                "grad_norm_below_dead_layer": [grad_below_dead(v, d) for v, d in zip(views, dead_at)],
                "test_accuracy": mean_spread([r.metric("test_accuracy") for r in recs]),
                "dead_profile_end": np.mean([dead_profile(v, -1) for v in views], 0).tolist(),
                "grad_profile_init": geo_profile(views, "grad_norm"),
            }
    return out


def c4_judge(results: Results, settings: Settings) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    m = measure(results)
    high, shift, base = m["high_lr/relu"], m["bias_shift/relu"], m["baseline/relu"]
    blocked = all(g == 0.0 for g in shift["grad_norm_below_dead_layer"]) and all(shift["fully_dead_layer_at_init"])
    dead = min(high["dead_fraction_end"]["mean"], shift["dead_fraction_end"]["mean"])
    verdict = verdict_of(supported=max(high["dead_fraction_end"]["mean"], shift["dead_fraction_end"]["mean"]) < 0.05,
                         refuted=dead >= 0.2 and blocked)
    numbers = {k: {f: v[f] for f in ("dead_fraction_init", "dead_fraction_end", "grad_norm_below_dead_layer")}
               for k, v in m.items() if k.endswith("/relu")}
    summary = (f"ReLU dead fraction at the end: lr {HIGH_LR} (Adam) {pm(high['dead_fraction_end'])}, bias shift {SHIFT:g} "
               f"{pm(shift['dead_fraction_end'])}, healthy baseline {pm(base['dead_fraction_end'])}; gradient reaching the "
               f"layers below a fully dead layer: {_zeros(shift['grad_norm_below_dead_layer'])}")
    figure = {k: m[k]["dead_profile_end"] for k in ("baseline/relu", "high_lr/relu", "bias_shift/relu")}
    return verdict, numbers, summary, figure


def _zeros(values: list[float | None]) -> str:
    found = [v for v in values if v is not None]
    if not found:
        return "no fully dead layer"
    return "exactly 0 in every seed" if all(v == 0 for v in found) and len(found) == len(values) else \
        ", ".join("none" if v is None else f"{v:.1e}" for v in values)


def c4_figure(data: dict[str, Any]) -> tuple[Any, str]:
    from ...reporting.figures import overlay

    fig, (ax,) = axes()
    overlay({k.split("/")[0]: (list(range(1, len(v) + 1)), v) for k, v in data.items()}, xlabel="ReLU layer (1 = input side)",
            ylabel="dead fraction, last step", title="Dead ReLU units", ax=ax)
    ax.set_ylim(-0.02, 1.02)
    return fig, ("Fraction of units that output 0 on every sample of the batch, per ReLU layer at the last step "
                 "(mean over seeds). A dead unit's derivative is 0 on every sample: its gradient has vanished completely.")


C4 = Claim(
    "C4", "ReLU's derivative is always 0 on the negative side, so its gradient cannot vanish.",
    "refuted when ReLU's mean dead fraction at the end is at least 0.2 under both the too-high learning rate and the "
    "negative bias shift, and in every seed of the bias-shift scenario the layers below a fully dead layer receive a "
    "gradient of exactly 0; supported when the dead fraction stays under 0.05 in both; qualified otherwise",
    runs, c4_judge, c4_figure)


def c5_judge(results: Results, settings: Settings) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    m = measure(results)
    shift = m["bias_shift/relu"]
    dead, below = shift["fully_dead_layer_at_init"], shift["grad_norm_below_dead_layer"]
    verdict = verdict_of(supported=all(dead) and all(g == 0.0 for g in below),
                         refuted=not any(dead) and m["high_lr/relu"]["dead_fraction_end"]["mean"] < 0.5)
    numbers = {"fully_dead_layer_at_init": dead, "grad_norm_below_dead_layer": below,
               "dead_fraction_high_lr_end": m["high_lr/relu"]["dead_fraction_end"],
               "grad_profile_init_relu": shift["grad_profile_init"]}
    summary = (f"bias shift {SHIFT:g}: a fully dead ReLU layer at init in {sum(dead)}/{len(dead)} seeds; gradient of every "
               f"layer below it: {_zeros(below)}; lr {HIGH_LR}: {pm(m['high_lr/relu']['dead_fraction_end'])} of units dead")
    figure = {"relu": shift["grad_profile_init"], "leaky_relu": m["bias_shift/leaky_relu"]["grad_profile_init"]}
    return verdict, numbers, summary, figure


def c5_figure(data: dict[str, Any]) -> tuple[Any, str]:
    fig, (ax,) = axes()
    floor = 1e-16
    for (name, g), color in zip(data.items(), ("#d2461e", "#1f5fa8")):
        x = np.arange(1, len(g) + 1)
        y = np.maximum(np.asarray(g), floor)
        ax.plot(x, y, marker="o", color=color, label=name)
        zero = np.asarray(g) == 0
        ax.plot(x[zero], y[zero], "x", color="k", markersize=9, label="exactly 0" if name == "relu" else None)
    ax.set_yscale("log")
    ax.set_xlabel("Linear layer (1 = input side)")
    ax.set_ylabel("||grad|| of the layer's weights at init")
    ax.set_title(f"Hidden biases shifted by {SHIFT:g}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig, (f"Weight-gradient norm per layer at initialisation with every hidden bias shifted by {SHIFT:g} (geometric "
                 f"mean over seeds; exact zeros drawn at {floor:g} and crossed). Below a fully dead ReLU layer every gradient "
                 "is exactly 0; LeakyReLU passes a gradient scaled by its slope per layer.")


C5 = Claim(
    "C5", "A network with only ReLU can have its whole gradient become 0.",
    "supported when, in every seed of the negative-bias-shift scenario, some ReLU layer is fully dead at init and every "
    "weight layer below it receives a gradient of exactly 0; refuted when no layer is ever fully dead and fewer than half "
    "the units die under the too-high learning rate; qualified otherwise",
    runs, c5_judge, c5_figure)


def leaky_formulas(slope: float = SLOPE) -> dict[str, Any]:
    """The correct LeakyReLU against the article's formula (a*x on both branches), compared on a grid of x in [-3, 3]."""
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    article = slope * x                                     # the article: f(x) = a*x for x >= 0 and for x < 0
    correct = torch.nn.functional.leaky_relu(x, slope)      # f(x) = x for x >= 0, a*x for x < 0
    return {"correct": f"f(x) = x for x >= 0; f(x) = {slope:g}*x for x < 0",
            "article": "f(x) = a*x on both branches (a called a 'bias factor')",
            "article_equals_leaky_relu": bool(torch.allclose(article, correct)),
            "article_max_error": float((article - correct).abs().max()),
            "correct_is_linear": bool(torch.allclose(correct, correct[-1] / x[-1] * x))}


def c6_judge(results: Results, settings: Settings) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    m = measure(results)
    forms = leaky_formulas()
    leaky_alive = all(m[f"{s}/leaky_relu"]["dead_fraction_end"]["mean"] < 0.01 for s in ("high_lr", "bias_shift"))
    grads = [g for g in m["bias_shift/leaky_relu"]["grad_norm_below_dead_layer"] if g is not None]
    flows = bool(grads) and all(g > 0 for g in grads)
    fixes = leaky_alive and flows
    verdict = verdict_of(supported=fixes and forms["article_equals_leaky_relu"], refuted=not fixes)
    numbers = {"formulas": forms, "slope": SLOPE} | {
        k: {f: m[k][f] for f in ("dead_fraction_end", "grad_norm_below_dead_layer", "test_accuracy")}
        for k in ("high_lr/relu", "high_lr/leaky_relu", "bias_shift/relu", "bias_shift/leaky_relu")}
    g = ", ".join(f"{v:.0e}" for v in grads) or "n/a"
    summary = (f"LeakyReLU dead fraction {pm(m['high_lr/leaky_relu']['dead_fraction_end'])} (lr {HIGH_LR}) and "
               f"{pm(m['bias_shift/leaky_relu']['dead_fraction_end'])} (bias shift) vs ReLU {pm(m['high_lr/relu']['dead_fraction_end'])} "
               f"and {pm(m['bias_shift/relu']['dead_fraction_end'])}; gradient below ReLU's dead layer {g} instead of 0; test accuracy "
               f"lr {HIGH_LR}: {pm(m['high_lr/leaky_relu']['test_accuracy'])} vs ReLU {pm(m['high_lr/relu']['test_accuracy'])}. "
               f"Correct formula: {forms['correct']}; the article's a*x on both branches is off by up to "
               f"{forms['article_max_error']:.2f} on [-3, 3] (it scales the positive side too)")
    figure = {k: m[k]["dead_profile_end"] for k in ("high_lr/relu", "high_lr/leaky_relu")} | {
        "acc": {k: [m[k]["test_accuracy"]["mean"], m[k]["test_accuracy"]["std"]]
                for k in ("high_lr/relu", "high_lr/leaky_relu", "bias_shift/relu", "bias_shift/leaky_relu")}}
    return verdict, numbers, summary, figure


def c6_figure(data: dict[str, Any]) -> tuple[Any, str]:
    from ...reporting.figures import overlay

    fig, (a, b) = axes(2)
    overlay({k: (list(range(1, len(data[k]) + 1)), data[k]) for k in ("high_lr/relu", "high_lr/leaky_relu")},
            xlabel="activation layer (1 = input side)", ylabel="dead fraction, last step", title=f"Adam lr {HIGH_LR}", ax=a)
    bars(b, data["acc"], ylabel="test accuracy", title="Same scenarios", colors=["#1f5fa8", "#d2461e"] * 2)  # as on the left
    return fig, ("Left: LeakyReLU (slope 0.01) has no dead units where ReLU loses most of them. Right: test accuracy in "
                 "both dead-unit scenarios; keeping units alive is not the same as training well.")


C6 = Claim(
    "C6", "LeakyReLU fixes ReLU's negative side (the article writes f(x) = a*x on both branches).",
    "supported when LeakyReLU's dead fraction stays under 0.01 in both scenarios and a non-zero gradient reaches the "
    "layers below ReLU's dead layer in every seed, and the article's formula equals torch's LeakyReLU on a grid of x in "
    "[-3, 3]; qualified when LeakyReLU fixes the dead units but the article's formula (a*x on both branches) differs "
    "from it; refuted when LeakyReLU does not fix them",
    runs, c6_judge, c6_figure)
