"""Study `depth-sweep`: activation x init x norm x depth -> accuracy after a fixed budget, and the
gradient ratio first/last layer at init next to the mean-field prediction.

No single paper: the comparison is with graddoctor.theory (Poole et al. 2016 / Schoenholz et al.
2017 for plain MLPs, Yang et al. 2019 with BatchNorm) and with the folklore the other studies
measure: deep sigmoid nets with PyTorch's default init do not train (Glorot & Bengio 2010), ReLU
with a gain-corrected init does (He et al. 2015), BatchNorm makes the init matter less (Ioffe &
Szegedy 2015).

Here: the lab's MLP (width 64 = digits' 64 inputs, so every hidden layer is square) on digits,
SGD with momentum 0.9, lr 0.01, batch 64, the same number of steps for every cell. Inits: the
lab's "default" (PyTorch's, n Var[W] = 1/3) and "xavier" (Var = gain^2 2/(fan_in + fan_out):
gain 1 sigmoid, 5/3 tanh, sqrt 2 ReLU, which is He init). Gradient ratio: ||dL/dh|| of the first
Linear over the output layer's at step 0 (`out_grad_norm`); predicted by theory.predict_spec on
the nominal sigmas (biases and the 64 -> 10 output layer's shape ignored).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ... import theory
from ..results import Results, fmt_spread, mean_spread
from ...train.spec import NetSpec, RunSpec, TrainSpec, run_spec
from ..study import Settings, Study
from ._paper_common import at_init

NAME = "depth-sweep"
GAIN2 = {"sigmoid": 1.0, "tanh": 25 / 9, "relu": 2.0}   # nn.init.calculate_gain squared: the lab's "xavier"


@dataclasses.dataclass(frozen=True)
class Config:
    activations: tuple[str, ...] = ("sigmoid", "tanh", "relu")
    inits: tuple[str, ...] = ("default", "xavier")
    norms: tuple[str, ...] = ("none", "batch")
    depths: tuple[int, ...] = (3, 6, 12, 24)
    steps: int = 300
    width: int = 64
    batch: int = 64


FULL = Config()
QUICK = Config(activations=("sigmoid", "relu"), inits=("default",), depths=(3, 12), steps=150)


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    cfg = config(settings)
    train = TrainSpec(optimizer="sgd", lr=0.01, momentum=0.9, batch=cfg.batch, steps=cfg.steps, every=10)
    return [run_spec(f"{a}/{i}/{n}/depth={d}/s{seed}", seed=seed, train=train, activation=a, init=i, norm=n, depth=d,
                     net=NetSpec(depth=d, width=cfg.width, activation=a, init=i, norm=n))
            for a in cfg.activations for i in cfg.inits for n in cfg.norms for d in cfg.depths
            for seed in range(settings.seeds)]


def predicted_log10_ratio(act: str, init: str, norm: str, depth: int, batch: int) -> float:
    """log10 of ||dL/dh|| first Linear / output layer, from mean-field theory on the nominal init."""
    sigma_w2 = 1 / 3 if init == "default" else GAIN2[act]
    spec = theory.mlp_spec(act, sigma_w2, 0.0, depth, batchnorm=norm == "batch")
    layers = theory.predict_spec(spec, batch=batch if norm == "batch" else None).layers
    return math.log10(layers[0].rel_out_grad_norm / layers[-1].rel_out_grad_norm)


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """Per cell: test accuracy and the measured vs predicted log10 gradient ratio at init."""
    cfg = config(settings)
    cells = []
    for a in cfg.activations:
        for i in cfg.inits:
            for n in cfg.norms:
                for d in cfg.depths:
                    tags = {"activation": a, "init": i, "norm": n, "depth": d}
                    grads = [at_init(r) for r in results.select(**tags)]
                    cells.append(tags | {"test_accuracy": mean_spread(results.metric("test_accuracy", **tags)),
                                         "log10_ratio": mean_spread([math.log10(g[0] / g[-1]) for g in grads]),
                                         "predicted_log10_ratio": predicted_log10_ratio(a, i, n, d, cfg.batch)})
    header = ["activation", "init", "norm"] + [f"acc d={d}" for d in cfg.depths] + \
             [f"log10 ratio d={d} (theory)" for d in cfg.depths]
    rows = []
    for a in cfg.activations:
        for i in cfg.inits:
            for n in cfg.norms:
                row = [c for c in cells if (c["activation"], c["init"], c["norm"]) == (a, i, n)]
                rows.append([a, i, n] + [fmt_spread(c["test_accuracy"], 2) for c in row] +
                            [f"{c['log10_ratio']['mean']:.1f} ({c['predicted_log10_ratio']:.1f})" for c in row])
    errors = [abs(c["log10_ratio"]["mean"] - c["predicted_log10_ratio"]) for c in cells if c["norm"] == "none"]
    return {"config": dataclasses.asdict(cfg), "cells": cells, "table": {"header": header, "rows": rows},
            "max_theory_error_plain": max(errors),
            "notes": ["acc: test accuracy after the budget (mean ± std over seeds; chance 0.1); log10 ratio: "
                      "log10 ||dL/dh first layer|| / ||dL/dh output layer|| at init, measured (mean-field prediction)",
                      f"without norm, measured and predicted log10 ratios differ by at most {max(errors):.2f} decades"]}


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The table, accuracy vs depth and gradient ratio vs depth per (activation, init, norm)."""
    from ...reporting.figures import overlay
    from ._paper_common import axes

    cfg = analysis["config"]
    with page.section("Accuracy and gradient ratio vs depth", anchor="depth-sweep"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(analysis["table"]["header"], analysis["table"]["rows"])
        for note in analysis["notes"]:
            page.paragraph(note)
        groups: dict[str, list[dict]] = {}
        for c in analysis["cells"]:
            groups.setdefault(f"{c['activation']}/{c['init']}/{c['norm']}", []).append(c)
        fig, ax = axes(5.5, 3.6, ncols=2)
        overlay({k: (cfg["depths"], [c["test_accuracy"]["mean"] for c in v]) for k, v in groups.items()},
                xlabel="depth (Linear layers)", ylabel="test accuracy", guide=0.1, ax=ax[0])
        overlay({k: (cfg["depths"], [c["log10_ratio"]["mean"] for c in v]) for k, v in groups.items()},
                xlabel="depth (Linear layers)", ylabel="log10 grad ratio first/last at init", ax=ax[1])
        ax[0].get_legend().remove()
        page.figure(fig, "Left: test accuracy after the fixed budget (dashed: chance). Right: gradient ratio at init.")


STUDY = Study(
    name=NAME,
    title="Depth sweep: activation x init x norm x depth",
    summary="Accuracy after a fixed SGD budget and the first/last-layer gradient ratio at init over activation, "
            "init, BatchNorm and depth, the ratio next to the mean-field prediction.",
    runs=runs, analyse=analyse, report=report)
