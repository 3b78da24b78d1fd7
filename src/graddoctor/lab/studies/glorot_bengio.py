"""Study `glorot-bengio`: activations and back-propagated gradients per layer at init (Glorot & Bengio 2010).

Paper: X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward neural
networks", AISTATS 2010, Sec. 4.2 and Figs. 6-7: 5 hidden layers of 1,000 units, tanh / sigmoid /
softsign. With the standard init W ~ U[-1/sqrt(n), 1/sqrt(n)], n Var[W] = 1/3: toward the output
the activations concentrate at 0 (Fig. 6, top) and toward the input the back-propagated gradients
dL/dh shrink (Fig. 7, top), by about 1/3 in variance per layer in the linear regime. With the
normalised init, Var[W] = 2 / (n_in + n_out) (= 1/n for square layers), both keep their spread
across layers (Figs. 6-7, bottom).

Here: the lab's MLP with 5 hidden layers (width 1,000 full / 256 quick) on digits (64 inputs), one
recorded step (graddoctor.watch, histograms at step 0) on a batch of 256 / 128. Both inits are the
paper's: standard = the lab's "default" (PyTorch's weights U[-1/sqrt(fan_in), 1/sqrt(fan_in)]) with
bias=False, which at init is the paper's zero biases; normalised = the lab's "glorot"
(U[+-sqrt(6/(fan_in + fan_out))], biases 0: Var 1/n on the square hidden layers, 2/(64 + width) on
the first). Spreads: std of each hidden
layer's activations (`act_std`) and of dL/dh (`out_grad_norm` / sqrt(batch x width)), from the
store; the back-propagated gradient histograms are re-measured on the same init and seed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ... import theory
from ..results import Results, mean_spread
from ...train.spec import NetSpec, RunSpec, TrainSpec, run_spec
from ..study import Settings, Study
from ._paper_common import at_init, capture

NAME = "glorot-bengio"
PAPER = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward networks (AISTATS), Sec. 4.2, Figs. 6-7"
ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "softsign": "Softsign"}
# NetSpec fields of each init (no bias at init = the paper's zero biases), and n Var[W] of the hidden layers
INITS = {"standard": ({"init": "default", "bias": False}, 1 / 3), "normalised": ({"init": "glorot"}, 1.0)}
HIDDEN = 5
N_IN = 64  # digits' 8x8 inputs: the first layer's fan_in


@dataclasses.dataclass(frozen=True)
class Config:
    width: int = 1000
    batch: int = 256


FULL = Config()
QUICK = Config(width=256, batch=128)


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    cfg = config(settings)
    train = TrainSpec(steps=1, batch=cfg.batch, hist_every=1)
    return [run_spec(f"{act}/{key}/s{seed}", seed=seed, train=train, activation=act, init=key,
                     net=NetSpec(depth=HIDDEN + 1, width=cfg.width, activation=act, **fields))
            for act in ACTIVATIONS for key, (fields, _) in INITS.items() for seed in range(settings.seeds)]


def spreads(record: Any) -> tuple[list[float], list[float]]:
    """(activation std, dL/dh std) of hidden layers 1..5 at step 0, from the store."""
    spec = record.spec
    acts = at_init(record, "act_std", kind=ACTIVATIONS[spec.net.activation])
    grads = at_init(record, "out_grad_norm")[:HIDDEN]
    return acts, [g / math.sqrt(spec.train.batch * spec.net.width) for g in grads]


def predicted_grad_ratio(act: str, init: str, width: int) -> float:
    """Mean-field std ratio of dL/dh, hidden layer 1 over hidden layer 5 (theory.predict_mlp, standardised inputs).

    The first layer's weight variance enters as the input's second moment: fan_in x Var[W] of that layer
    (1/3 standard; 2 x 64 / (64 + width) normalised), the hidden layers' as sigma_w^2 = n Var[W].
    """
    n_var = INITS[init][1]
    first = n_var if init == "standard" else 2 * N_IN / (N_IN + width)
    p = theory.predict_mlp(act, n_var, 0.0, HIDDEN + 1, input_q=first / n_var).layers
    return p[0].rel_out_grad_norm / p[HIDDEN - 1].rel_out_grad_norm


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """Per (activation, init): activation and gradient std per layer, their ratios, the theory's ratio."""
    points = []
    for act in ACTIVATIONS:
        for key in INITS:
            measured = [spreads(r) for r in results.select(activation=act, init=key)]
            points.append({"activation": act, "init": key,
                           "act_std": np.mean([m[0] for m in measured], axis=0).tolist(),
                           "grad_std": np.mean([m[1] for m in measured], axis=0).tolist(),
                           "act_ratio": mean_spread([m[0][-1] / m[0][0] for m in measured]),
                           "grad_ratio": mean_spread([m[1][0] / m[1][-1] for m in measured]),
                           "theory_grad_ratio": predicted_grad_ratio(act, key, config(settings).width),
                           "grad_hist": grad_histograms(backprop_grads(results.select(activation=act, init=key)[0]))})
    paper = {"standard": f"{(1 / 3) ** 2:.3f} (variance x1/3 per layer, 4 layers, linear regime)",
             "normalised": "about 1 (same spread in every layer)"}
    rows = [[p["activation"], p["init"], f"{p['act_ratio']['mean']:.3g}", f"{p['grad_ratio']['mean']:.3g}",
             f"{p['theory_grad_ratio']:.3g}", paper[p["init"]] if p["activation"] == "tanh" else "-"] for p in points]
    return {"paper": PAPER, "config": dataclasses.asdict(config(settings)), "points": points,
            "table": {"header": ["activation", "init", "act std layer5/layer1", "grad std layer1/layer5",
                                 "graddoctor.theory", "paper (tanh, grad ratio)"], "rows": rows},
            "notes": ["grad std layer1/layer5 < 1: back-propagated gradients shrink toward the input; the theory column "
                      "is the mean-field prediction of that ratio (predict_mlp, biases 0)", f"paper: {PAPER}"]}


def backprop_grads(record: Any) -> list[np.ndarray]:
    """dL/dh of hidden layers 1..5 at init: the run's model rebuilt (same spec and seed), on the first
    `batch` training samples, cross-entropy as in training (the store keeps their norms, not their values)."""
    from ...train.models import build
    from ...train.trainer import dataset, loss_function

    spec = record.spec
    data = dataset(spec.data)
    torch.manual_seed(spec.seed)
    model = build(spec.net, tuple(data.x_train.shape[1:]), data.n_classes, data.image_shape)
    x, y = data.x_train[: spec.train.batch], data.y_train[: spec.train.batch]
    caps = capture(model, x, lambda out: loss_function(data)(out, y), lambda m: isinstance(m, nn.Linear))
    return [c.grad.flatten().numpy() for c in caps[:HIDDEN]]


def grad_histograms(grads: list[np.ndarray]) -> dict[str, list]:
    """Per-layer fractions of dL/dh on 80 common bins over +-3 of the widest layer's std (the paper's Fig. 7)."""
    edge = 3 * max(float(g.std()) for g in grads)
    bins = np.linspace(-edge, edge, 81)
    return {"edges": bins.tolist(), "fractions": [(np.histogram(g, bins)[0] / len(g)).tolist() for g in grads]}


def _draw_grad_histograms(ax: Any, hist: dict[str, list], title: str) -> None:
    """One curve per layer on the common bins (a narrow layer shows a tall 0-peak)."""
    from ...reporting._axes import depth_colors

    fractions = hist["fractions"]
    for k, (f, color) in enumerate(zip(fractions, depth_colors(len(fractions)))):
        ax.stairs(f, hist["edges"], color=color, label=f"layer {k + 1}")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("back-propagated gradient dL/dh")
    ax.set_ylabel("fraction per bin")
    ax.legend(fontsize=7)


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The table, then per activation: activation histograms (from the store) and gradient histograms."""
    from ...reporting.figures import histograms
    from ._paper_common import axes

    with page.section("Activations and gradients per layer at init, vs the paper", anchor="glorot-bengio"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(analysis["table"]["header"], analysis["table"]["rows"])
        page.paragraph(analysis["notes"][0])
        hists = {(p["activation"], p["init"]): p["grad_hist"] for p in analysis["points"]}
        for act, kind in ACTIVATIONS.items():
            fig, ax = axes(5.0, 3.4, ncols=2)
            fig2, ax2 = axes(5.0, 3.4, ncols=2)
            for a, a2, key in zip(ax, ax2, INITS):
                record = results.select(activation=act, init=key)[0]
                view = record.view()
                names = [i.name for i in view.layer_info if i.type == kind]
                histograms(view, "act", step=0, layers=names, ax=a)
                a.set_title(f"{act}, {key} init", fontsize=9)
                _draw_grad_histograms(a2, hists[(act, key)], f"{act}, {key} init")
            page.figure(fig, f"{act}: activation histograms per hidden layer at init (the paper's Fig. 6), each over "
                             "its own range: with the standard init the upper layers' range shrinks.")
            page.figure(fig2, f"{act}: back-propagated gradient histograms per hidden layer at init (the paper's "
                              "Fig. 7), common bins: with the standard init the lower layers' gradients are narrower.")


STUDY = Study(
    name=NAME,
    title="Activations and back-propagated gradients at init, standard vs normalised (Glorot & Bengio 2010)",
    summary="Per-layer activation and gradient spreads and histograms at init for tanh, sigmoid and softsign MLPs "
            "with 5 hidden layers, standard U[-1/sqrt(n), 1/sqrt(n)] vs normalised init, against the paper and theory.",
    runs=runs, analyse=analyse, report=report)
