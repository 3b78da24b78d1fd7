"""Study `criticality`: deep tanh nets train when depth < ~6 xi_c (Schoenholz et al. 2017).

Paper: S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, "Deep Information Propagation", ICLR
2017 (arXiv:1611.01232), Sec. 5 and Fig. 5: tanh MLPs on MNIST/CIFAR-10 over a sigma_w^2 x depth
grid (sigma_b^2 = 0.05); the trainable region is bounded by depth ~ 6 xi_c, xi_c the correlation
depth scale, which diverges at the order-to-chaos line chi_1 = 1 (sigma_w^2 ~ 1.76 at sigma_b^2 =
0.05), so only near criticality do very deep nets train.

Here: the lab's tanh MLP (width 64) on digits, weights N(0, sigma_w^2 / fan_in) and biases
N(0, sigma_b^2) with the paper's sigma_b^2 = 0.05 (the lab's init "normal"), so the critical point
is the paper's sigma_w^2 = 1.76; SGD with momentum 0.9, lr 0.003, a fixed budget of steps. A cell
is "trainable" when the mean test accuracy over seeds exceeds 0.5 (chance 0.1). The overlaid
curve is 6 xi_c from graddoctor.theory.depth_scales at sigma_b^2 = 0.05.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ... import theory
from ..results import Results, mean_spread
from ...train.spec import NetSpec, RunSpec, TrainSpec, run_spec
from ..study import Settings, Study

NAME = "criticality"
PAPER = "Schoenholz et al. 2017, Deep Information Propagation (ICLR; arXiv:1611.01232), Sec. 5, Fig. 5"
SIGMA_B2 = 0.05           # the paper's bias variance: chi_1 = 1 at sigma_w^2 = 1.76
TRAINABLE_ACC = 0.5


@dataclasses.dataclass(frozen=True)
class Config:
    sigma_w2: tuple[float, ...] = (0.5, 1.0, 1.5, 1.76, 2.0, 3.0, 4.0)
    depths: tuple[int, ...] = (10, 20, 40, 60)
    width: int = 64
    steps: int = 300
    lr: float = 0.003


FULL = Config()
QUICK = Config(sigma_w2=(0.5, 1.76, 4.0), depths=(16, 60), width=64, steps=150)


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    cfg = config(settings)
    train = TrainSpec(optimizer="sgd", lr=cfg.lr, momentum=0.9, batch=64, steps=cfg.steps, every=50)
    return [run_spec(f"sw2={s:g}/depth={d}/s{seed}", seed=seed, train=train, sigma_w2=s, depth=d,
                     net=NetSpec(depth=d, width=cfg.width, activation="tanh", init="normal", sigma_w2=s,
                                 sigma_b2=SIGMA_B2))
            for d in cfg.depths for s in cfg.sigma_w2 for seed in range(settings.seeds)]


def trainable_depth(sigma_w2: float, sigma_b2: float = SIGMA_B2) -> float:
    """6 xi_c (inf at criticality)."""
    scales = theory.depth_scales("tanh", sigma_w2, sigma_b2)
    return math.inf if scales.trainable_depth is None else scales.trainable_depth


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """Test accuracy per cell, the 6 xi_c prediction per sigma_w^2, and how often the two agree."""
    cfg = config(settings)
    acc = [[mean_spread(results.metric("test_accuracy", sigma_w2=s, depth=d)) for s in cfg.sigma_w2] for d in cfg.depths]
    limit = [trainable_depth(s) for s in cfg.sigma_w2]
    agree = [(a["mean"] or 0) > TRAINABLE_ACC and d < lim or (a["mean"] or 0) <= TRAINABLE_ACC and d >= lim
             for d, row in zip(cfg.depths, acc) for a, lim in zip(row, limit)]
    deepest = [a["mean"] or 0 for a in acc[-1]]
    critical = theory.critical_sigma_w2("tanh", SIGMA_B2)
    best = cfg.sigma_w2[int(np.argmax(deepest))]
    out = {"paper": PAPER, "config": dataclasses.asdict(cfg), "sigma_b2": SIGMA_B2, "accuracy": acc,
           "six_xi_c": [None if math.isinf(v) else v for v in limit], "critical_sigma_w2": critical,
           "agreement": float(np.mean(agree)), "best_sigma_w2_at_deepest": best, "deepest": max(cfg.depths)}
    header = ["depth"] + [f"sw2={s:g}" for s in cfg.sigma_w2]
    rows = [[d] + [f"{a['mean']:.2f}" + ("*" if a["mean"] > TRAINABLE_ACC else "") for a in row]
            for d, row in zip(cfg.depths, acc)]
    rows.append(["6 xi_c"] + [f"{v:.0f}" if math.isfinite(v) else "inf" for v in limit])
    out["table"] = {"header": header, "rows": rows}
    out["curves"] = _curves(cfg.sigma_w2, 12 if settings.quick else 40)
    out["notes"] = [
        f"test accuracy, mean over seeds; * = trainable (> {TRAINABLE_ACC}); the last row is the predicted 6 xi_c",
        f"trainable <=> depth < 6 xi_c holds in {100 * out['agreement']:.0f} % of the cells; the best sigma_w^2 at "
        f"depth {out['deepest']} is {best:g} (chi_1 = 1 at {critical:.2f} for the paper's sigma_b^2 = {SIGMA_B2:g})",
        f"paper: {PAPER}"]
    return out


def _curves(sigma_w2: tuple[float, ...], n: int) -> dict[str, Any]:
    """6 xi_c over a fine sigma_w^2 grid (capped at 1e4: infinite at chi_1 = 1), critical point included."""
    fine = sorted(np.geomspace(min(sigma_w2), max(sigma_w2), n).tolist() + [theory.critical_sigma_w2("tanh", SIGMA_B2)])
    return {"sigma_w2": fine, "six_xi_c": [min(trainable_depth(s), 1e4) for s in fine]}


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The accuracy heatmap with the 6 xi_c curve (this run's sigma_b^2 and the paper's) overlaid."""
    from ._paper_common import axes

    cfg = analysis["config"]
    sw2, depths = np.array(cfg["sigma_w2"]), np.array(cfg["depths"])
    acc = np.array([[a["mean"] or 0.0 for a in row] for row in analysis["accuracy"]])
    with page.section("Trainability vs sigma_w^2 and depth, vs the paper", anchor="criticality"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(analysis["table"]["header"], analysis["table"]["rows"])
        for note in analysis["notes"][:2]:
            page.paragraph(note)
        fig, ax = axes(6.5, 4.2)
        mesh = ax.pcolormesh(_edges(sw2), _edges(depths), acc, cmap="viridis", vmin=0, vmax=1, shading="flat")
        fig.colorbar(mesh, ax=ax, label="test accuracy")
        curves = analysis["curves"]
        ax.plot(curves["sigma_w2"], curves["six_xi_c"], "w-", lw=2, label=f"6 xi_c (sigma_b^2 = {SIGMA_B2:g})")
        ax.axvline(analysis["critical_sigma_w2"], color="r", ls="--", lw=1, label="chi_1 = 1")
        ax.set_ylim(_edges(depths)[0], _edges(depths)[-1])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sw2, [f"{v:g}" for v in sw2], minor=False, rotation=45)  # 1.5, 1.76, 2 sit close
        ax.set_yticks(depths, [str(d) for d in depths], minor=False)
        ax.minorticks_off()
        ax.set_xlabel("sigma_w^2")
        ax.set_ylabel("depth (Linear layers)")
        ax.legend(fontsize=7, loc="lower left", framealpha=0.8)
        page.figure(fig, "Test accuracy after the fixed budget; trainable below the solid 6 xi_c curve, per the paper; red: chi_1 = 1.")


def _edges(xs: np.ndarray) -> np.ndarray:
    """Cell edges on a log axis: geometric midpoints, the end cells as wide as their neighbours."""
    mid = np.sqrt(xs[1:] * xs[:-1])
    return np.concatenate([[xs[0] ** 2 / mid[0]], mid, [xs[-1] ** 2 / mid[-1]]])


STUDY = Study(
    name=NAME,
    title="Trainable depth ~ 6 xi_c around criticality (Schoenholz et al. 2017)",
    summary="Trains tanh MLPs over a sigma_w^2 x depth grid under one budget and overlays the mean-field "
            "trainable depth 6 xi_c; the deepest nets train only near chi_1 = 1.",
    runs=runs, analyse=analyse, report=report)
