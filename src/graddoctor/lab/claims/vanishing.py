"""C1 (gradients shrink through depth) and C2 (vanishing gradients slow or stop training): sigmoid MLPs."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import theory
from ...config import update_stat
from ..results import Results, mean_spread
from ...train.spec import NetSpec, run_spec
from ..study import Settings
from ._common import (AT_INIT, WIDTH, Claim, axes, decades, first_last, geo_profile, log10_spread, mean_curve, pm,
                      profile, sgd, verdict_of)

C1_DEPTHS = (5, 10, 15, 20)  # deeper, ||dL/dh||^2 of the first layer underflows float32 (about 1e-16^2 at 20)
DEEP, SHALLOW = 20, 3
SIGMOID_LR = 0.1  # SGD with momentum 0.9: the shallow sigmoid MLP learns fast with it; the deep one does not move
# PyTorch's default nn.Linear init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)): weight variance
# 1/(3 fan_in), so sigma_w^2 = 1/3; bias variance 1/(3 fan_in) (hidden fan_in = WIDTH).
DEFAULT_SIGMA_W2, DEFAULT_SIGMA_B2 = 1 / 3, 1 / (3 * WIDTH)


def c1_runs(settings: Settings) -> list:
    depths = (5, 10, 20) if settings.quick else C1_DEPTHS
    return [run_spec(f"c1/sigmoid-depth{d}/s{k}", net=NetSpec(depth=d, width=WIDTH, activation="sigmoid"), train=AT_INIT,
                     seed=k, claim="C1", depth=d) for d in depths for k in range(settings.seeds)]


def c1_judge(results: Results, settings: Settings) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    depths = sorted({r.spec.tag("depth") for r in results.select(claim="C1")})
    ratios = {d: log10_spread([first_last(r.view()) for r in results.select(claim="C1", depth=d)]) for d in depths}
    deepest = results.select(claim="C1", depth=depths[-1])
    factors = [_fitted_factor(profile(r.view())) for r in deepest]
    chi1 = theory.chi1("sigmoid", DEFAULT_SIGMA_W2, DEFAULT_SIGMA_B2)
    numbers = {"first_over_last_log10": {str(d): ratios[d] for d in depths},
               "per_layer_factor_measured": mean_spread(factors), "per_layer_factor_theory_chi1": chi1,
               "depth_of_fit": depths[-1]}
    means = [ratios[d]["mean"] for d in depths]
    worst = max(-np.inf if v is None else v for v in ratios[depths[-1]]["values"])
    supported = worst < -3 and all(a > b for a, b in zip(means, means[1:]))
    verdict = verdict_of(supported, refuted=ratios[depths[-1]]["mean"] >= -1)
    summary = (f"sigmoid, default init, at init: ||dL/dh|| first/last = {decades(ratios[depths[-1]])} at depth "
               f"{depths[-1]} ({', '.join(f'{decades(ratios[d])} at {d}' for d in depths[:-1])}); per layer "
               f"||g||^2 x{pm(numbers['per_layer_factor_measured'], 3)} measured vs chi_1 = {chi1:.3f} (mean-field)")
    figure = {str(d): geo_profile([r.view() for r in results.select(claim="C1", depth=d)]) for d in depths}
    return verdict, numbers, summary, figure


def _fitted_factor(g: np.ndarray) -> float:
    """The measured per-layer factor of ||g_l||^2 toward the input: exp(-slope) of log ||g_l||^2 fitted over the layer index."""
    return float(np.exp(-np.polyfit(np.arange(len(g)), np.log(g**2), 1)[0]))


def c1_figure(data: dict[str, Any]) -> tuple[Any, str]:
    from ...reporting.figures import overlay

    fig, (ax,) = axes()
    overlay({f"depth {d}": (list(range(1, len(g) + 1)), g) for d, g in data.items()}, xlabel="Linear layer (1 = input side)",
            ylabel="||dL/dh|| at init", logy=True, title="Sigmoid MLPs, PyTorch default init", ax=ax)
    return fig, ("Per-layer pre-activation gradient norm at initialisation (geometric mean over seeds): it falls by "
                 "the same factor per layer toward the input, so the first layer's gradient shrinks exponentially with depth.")


C1 = Claim(
    "C1", "In deep nets, gradients shrink toward zero as they flow back through more layers.",
    "supported when, for sigmoid MLPs at init, ||dL/dh|| of the first over the last Linear layer is below 1e-3 at the "
    "largest depth in every seed and its mean log falls with every added depth; refuted when the mean at the largest "
    "depth is 0.1 or more; qualified otherwise",
    c1_runs, c1_judge, c1_figure)


def c2_runs(settings: Settings) -> list:
    train = sgd(settings, lr=SIGMOID_LR)
    return [run_spec(f"c2/sigmoid-{name}/s{k}", net=NetSpec(depth=d, width=WIDTH, activation="sigmoid"), train=train,
                     seed=k, claim="C2", variant=name) for name, d in (("deep", DEEP), ("shallow", SHALLOW))
            for k in range(settings.seeds)]


def c2_judge(results: Results, settings: Settings) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    deep, shallow = results.select(claim="C2", variant="deep"), results.select(claim="C2", variant="shallow")
    acc = {"deep": mean_spread([r.metric("test_accuracy") for r in deep]),
           "shallow": mean_spread([r.metric("test_accuracy") for r in shallow])}
    upd = {name: mean_spread([_first_layer_update(r.view()) for r in recs]) for name, recs in (("deep", deep), ("shallow", shallow))}
    numbers = {"test_accuracy": acc, "first_layer_update_ratio": upd, "depths": {"deep": DEEP, "shallow": SHALLOW},
               "steps": deep[0].spec.train.steps, "optimizer": f"sgd lr {SIGMOID_LR} momentum 0.9, batch 64"}
    gap = acc["shallow"]["mean"] - acc["deep"]["mean"]
    values = acc["deep"]["values"] + acc["shallow"]["values"]  # None: a non-finite accuracy, never "separated"
    separated = None not in values and max(acc["deep"]["values"]) < min(acc["shallow"]["values"])
    verdict = verdict_of(gap >= 0.3 and separated, refuted=gap < 0.05)
    summary = (f"same budget ({numbers['steps']} SGD steps): test accuracy depth {DEEP} {pm(acc['deep'])} vs depth "
               f"{SHALLOW} {pm(acc['shallow'])}; first layer's update ||dw||/||w|| per step {_sci(upd['deep'])} vs {_sci(upd['shallow'])}")
    every = max(1, numbers["steps"] // 100)
    figure = {"deep": mean_curve(deep, every=every), "shallow": mean_curve(shallow, every=every), "every": every,
              "upd_deep": geo_profile(views := [r.view() for r in deep], update_stat(views[0].stats), -1)}
    return verdict, numbers, summary, figure


def _sci(s: dict[str, Any]) -> str:
    return "n/a" if s["mean"] is None else f"{s['mean']:.1e} ± {s['std']:.0e}"


def _first_layer_update(view: Any) -> float:
    """||dw||/||w|| of the first Linear layer, averaged over the last 10 recorded steps."""
    return float(np.nanmean(view.stat(update_stat(view.stats), view.layers[0])[-10:]))  # exact, else the estimate


def c2_figure(data: dict[str, Any]) -> tuple[Any, str]:
    from ...reporting.figures import overlay

    fig, (a, b) = axes(2)
    x = [k * data["every"] for k in range(len(data["deep"]))]
    overlay({f"depth {DEEP}": (x, data["deep"]), f"depth {SHALLOW}": (x, data["shallow"])}, ylabel="training loss",
            title="Sigmoid MLPs, same budget", ax=a)
    upd = data["upd_deep"]
    overlay({f"depth {DEEP}": (list(range(1, len(upd) + 1)), upd)}, xlabel="Linear layer (1 = input side)",
            ylabel="||dw||/||w|| per step", logy=True, title="Update size per layer, last step", ax=b)
    return fig, ("Left: training loss (mean over seeds); the deep sigmoid MLP stays at chance while the shallow one learns. "
                 "Right: the deep net's per-layer update ratio at the last step: the layers near the input barely move (missing "
                 "points: an update of exactly 0, below float32's resolution relative to the weights).")


C2 = Claim(
    "C2", "Vanishing gradients slow training or stop it, and hurt accuracy.",
    "supported when, after the same SGD budget, the deep sigmoid MLP's mean test accuracy is at least 0.3 below the "
    "shallow one's and every deep seed is below every shallow seed; refuted when the gap is under 0.05; qualified otherwise",
    c2_runs, c2_judge, c2_figure)
