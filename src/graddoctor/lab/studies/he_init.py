"""Study `he-init`: a 30-layer ReLU net trains with He init and stalls with Xavier's (He et al. 2015).

Paper: K. He, X. Zhang, S. Ren, J. Sun, "Delving Deep into Rectifiers", ICCV 2015 (arXiv:1502.01852),
Sec. 2.2 and Fig. 3. A ReLU layer with Var[w] = 1/n (the "Xavier" init they compare with) halves
the second moment of the signal, forward and backward; with Var[w] = 2/n (theirs) it is kept. On
ImageNet their 30-layer plain ReLU conv net with Xavier init "completely stalls" while theirs
converges; at 22 layers both converge, theirs starting earlier.

Here: the lab's ReLU MLP (width 128 full / 64 quick) on digits, SGD with momentum 0.9, lr 0.002,
batch 64, the same budget for both inits; "Xavier" is the paper's Var[w] = 1/fan_in (init
"normal", sigma_w^2 = 1; the lab's "xavier" uses ReLU's gain sqrt 2 and would equal He init).
Biases start at 0. Gradient ratio: ||dL/dh|| of the first over the last Linear at step 0, against
graddoctor.theory.predict_mlp.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ... import theory
from ..results import Results, fmt_spread, mean_spread
from ...train.spec import NetSpec, RunSpec, TrainSpec, run_spec
from ..study import Settings, Study
from ._paper_common import at_init

NAME = "he-init"
PAPER = "He et al. 2015, Delving Deep into Rectifiers (ICCV; arXiv:1502.01852), Sec. 2.2 and Figs. 2-3"
INITS = {"he": ("He: Var 2/n", "he", 2.0), "xavier": ("Xavier: Var 1/n", "normal", 1.0)}
CHANCE_LOSS = math.log(10)    # cross-entropy of a uniform guess over digits' 10 classes


@dataclasses.dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (22, 30)
    width: int = 128
    steps: int = 1000


FULL = Config()
QUICK = Config(depths=(30,), width=64, steps=500)


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    cfg = config(settings)
    train = TrainSpec(optimizer="sgd", lr=0.002, momentum=0.9, batch=64, steps=cfg.steps, every=10)
    return [run_spec(f"{key}/depth={d}/s{seed}", seed=seed, train=train, init=key, depth=d,
                     net=NetSpec(depth=d, width=cfg.width, activation="relu", init=init, sigma_w2=sw2))
            for d in cfg.depths for key, (_, init, sw2) in INITS.items() for seed in range(settings.seeds)]


def _point(results: Results, key: str, depth: int) -> dict[str, Any]:
    records = results.select(init=key, depth=depth)
    grads = [at_init(r) for r in records]
    predicted = theory.predict_mlp("relu", INITS[key][2], 0.0, depth)
    losses = np.array([[np.nan if v is None else v for v in r.metrics["losses"]] for r in records], dtype=float)
    return {"init": key, "label": INITS[key][0], "depth": depth,
            "final_loss": mean_spread(results.metric("final_loss", init=key, depth=depth)),
            "test_accuracy": mean_spread(results.metric("test_accuracy", init=key, depth=depth)),
            "log10_grad_ratio": mean_spread([math.log10(g[0] / g[-2]) for g in grads]),
            "predicted_log10_grad_ratio": math.log10(predicted.layers[0].rel_out_grad_norm
                                                     / predicted.layers[-2].rel_out_grad_norm),
            "loss_curve": np.nanmean(losses, axis=0).tolist(), "steps_to_half_chance": _steps_below(losses)}


def _steps_below(losses: np.ndarray, window: int = 20) -> int | None:
    """First step where the seed-mean minibatch loss, averaged over `window` steps, is below half the chance loss."""
    curve = np.convolve(np.nanmean(losses, axis=0), np.ones(window) / window, mode="valid")
    below = np.flatnonzero(curve < 0.5 * CHANCE_LOSS)
    return int(below[0]) + window if below.size else None


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """Final train loss, test accuracy and gradient ratio at init per (depth, init); the verdict at the deepest."""
    cfg = config(settings)
    rows = [_point(results, key, d) for d in cfg.depths for key in INITS]
    deepest = max(cfg.depths)
    he, xavier = (next(r for r in rows if r["init"] == k and r["depth"] == deepest) for k in ("he", "xavier"))
    he_trains = he["final_loss"]["max"] < 0.5 * CHANCE_LOSS
    xavier_stalls = xavier["final_loss"]["min"] > 0.97 * CHANCE_LOSS
    out = {"paper": PAPER, "config": dataclasses.asdict(cfg), "points": rows, "chance_loss": CHANCE_LOSS,
           "he_trains": he_trains, "xavier_stalls": xavier_stalls,
           "rule": f"He trains: every seed's final train loss < half the chance loss ({0.5 * CHANCE_LOSS:.2f}); Xavier "
                   f"stalls: every seed's final train loss > 97 % of the chance loss ({0.97 * CHANCE_LOSS:.2f}), "
                   f"both at depth {deepest} after {cfg.steps} SGD steps"}
    out["table"] = {"header": ["depth", "init", "final train loss", "test accuracy", "steps to loss < 1.15",
                               "log10 grad ratio first/last", "theory", "paper (ImageNet conv net)"],
                    "rows": [[r["depth"], r["label"], fmt_spread(r["final_loss"]), fmt_spread(r["test_accuracy"]),
                              r["steps_to_half_chance"] if r["steps_to_half_chance"] is not None else f"> {cfg.steps}",
                              fmt_spread(r["log10_grad_ratio"], 2), f"{r['predicted_log10_grad_ratio']:.2f}",
                              _paper_says(r)] for r in rows]}
    out["notes"] = [out["rule"] + f": He trains {he_trains}, Xavier stalls {xavier_stalls}.", f"paper: {PAPER}"]
    return out


def _paper_says(row: dict[str, Any]) -> str:
    if row["depth"] >= 30:
        return "converges" if row["init"] == "he" else "stalls (no learning)"
    return "converges, earlier" if row["init"] == "he" else "converges, later"


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The table, the loss curves per depth, and the gradient flow at init of the deepest pair (seed 0)."""
    from ...reporting.figures import gradient_flow, overlay
    from ._paper_common import axes

    t = analysis["table"]
    with page.section("He vs Xavier init in a deep ReLU net, vs the paper", anchor="he-init"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(t["header"], t["rows"], text_columns=(7,))
        page.paragraph(analysis["notes"][0])
        every = results.records[0].spec.train.every
        for depth in analysis["config"]["depths"]:
            curves = {r["label"]: (np.arange(len(r["loss_curve"])), r["loss_curve"])
                      for r in analysis["points"] if r["depth"] == depth}
            fig, ax = axes()
            overlay(curves, ylabel="train loss (minibatch, mean over seeds)", guide=CHANCE_LOSS, ax=ax)
            page.figure(fig, f"Depth {depth}: training loss per step; dashed: chance (ln 10).")
        deepest = max(analysis["config"]["depths"])
        fig, ax = axes(ncols=2)
        for a, key in zip(ax, INITS):
            record = results.select(init=key, depth=deepest)[0]
            gradient_flow(record.view(), [0], prediction=theory.predict_mlp("relu", INITS[key][2], 0.0, deepest), ax=a)
            a.set_title(INITS[key][0])
        page.figure(fig, f"Depth {deepest}, seed 0: per-layer gradient norms at step 0 (every {every} steps recorded), "
                         "with the mean-field prediction dotted.")


STUDY = Study(
    name=NAME,
    title="He vs Xavier init in a 30-layer ReLU net (He et al. 2015)",
    summary="Trains 22- and 30-layer ReLU MLPs on digits with He init (Var 2/n) and the paper's Xavier (Var 1/n) "
            "under the same SGD budget: Xavier stalls at chance, He trains; gradient ratios at init vs theory.",
    runs=runs, analyse=analyse, report=report)
