"""Regenerate the README's figures (docs/*.png) and a sample report (docs/report.html, not committed).

    .venv/bin/python docs/make_figures.py            # about 20 s on one core

Trains two 10-layer MLPs on scikit-learn's 8x8 digits (shipped with scikit-learn, no download)
for 300 Adam steps, watched every step with histograms every 50: a sigmoid net with a fixed
N(0, 0.75^2) init that ignores fan-in (its gradient vanishes toward the input) and a ReLU net
with He init. Seeded: rerunning gives the same figures.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import graddoctor
from graddoctor.data import load_dataset
from graddoctor.reporting import figures, write_report

DOCS = Path(__file__).resolve().parent
DEPTH, WIDTH, STEPS, BATCH = 10, 64, 300, 64


def mlp(activation: str, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    sizes = [64] + [WIDTH] * (DEPTH - 1) + [10]
    for k in range(DEPTH):
        linear = nn.Linear(sizes[k], sizes[k + 1])
        with torch.no_grad():
            if activation == "sigmoid":  # the from-scratch init of examples/deep_sigmoid.py
                linear.weight.normal_(0, 0.75)
                linear.bias.normal_(0, 1)
            else:
                nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
                linear.bias.zero_()
        layers.append(linear)
        if k < DEPTH - 1:
            layers.append(nn.Sigmoid() if activation == "sigmoid" else nn.ReLU())
    return nn.Sequential(*layers)


def train(store: Path, activation: str) -> graddoctor.store.RunView:
    data = load_dataset("digits")
    model = mlp(activation)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    with graddoctor.watch(model, opt, store=store, name=activation, every=1, hist_every=50) as run:
        for _ in range(STEPS):
            idx = torch.randint(len(data.x_train), (BATCH,), generator=gen)
            loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
    return graddoctor.load(store, name=activation)


def save(ax, name: str) -> None:
    ax.figure.savefig(DOCS / name, dpi=80)
    print(f"wrote docs/{name}")


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "runs.db"
        sigmoid, relu = train(store, "sigmoid"), train(store, "relu")
        save(figures.gradient_flow(sigmoid, prediction=graddoctor.predict(mlp("sigmoid"), input_shape=(64,))),
             "gradient_flow.png")
        weights = [info.name for info in sigmoid.layer_info if info.kind == "param"]
        save(figures.heatmap(sigmoid, "out_grad_norm", layers=weights), "heatmap.png")
        save(figures.histograms(sigmoid, "act", step=0), "histograms.png")
        save(figures.unit_fractions(sigmoid), "unit_fractions.png")
        save(figures.update_ratio(sigmoid), "update_ratio.png")
        save(figures.loss_curve(relu), "loss_curve.png")
        curves = figures.curves_of({"sigmoid, N(0, 0.75²)": sigmoid, "relu, He init": relu}, "loss")
        save(figures.overlay(curves, ylabel="loss", title="two runs overlaid: training loss"), "overlay.png")
        out = write_report(store, DOCS / "report.html", names=["sigmoid"])
        print(f"wrote {out.relative_to(DOCS.parent)} ({out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
