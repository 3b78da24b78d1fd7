"""Study `bn-explosion`: BatchNorm's gradient explosion at initialization (Yang et al. 2019).

Paper: G. Yang, J. Pennington, V. Rao, J. Sohl-Dickstein, S. Schoenholz, "A Mean Field Theory of
Batch Normalization", ICLR 2019 (arXiv:1902.08129). Claim: in a deep Linear-BatchNorm-ReLU MLP at
initialization (batch statistics, i.i.d. Gaussian weights), ||dL/dh||^2 grows toward the input by
a fixed factor per layer whatever the init: pi / (pi - 1) ~= 1.467 for ReLU as the batch grows
(their Cor. 3.12), more for small batches. Residual connections remove the exponential growth.

Measured: one recorded step (graddoctor.watch, the lab's trainer, steps=1) of the lab's MLP on the
`gaussian` data (32-d inputs), PyTorch's default init: ||dL/dh|| (`out_grad_norm`) of every hidden
Linear at step 0, before any update. Growth = least-squares per-layer factor of ||dL/dh||^2 over
the hidden Linears past the first (its input is not normalised) and before the last (its gradient
comes straight from the loss). Residual nets (the lab's residual=True: x + ReLU(BN(W x))): the
gradient of each block's output, the residual stream (the ReLU's out_grad_norm, since the skip
adds it unchanged). Prediction: graddoctor.theory.batchnorm_growth (finite batch).
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
from ._paper_common import at_init, growth, ratio

NAME = "bn-explosion"
PAPER = "Yang et al. 2019, A Mean Field Theory of Batch Normalization (ICLR; arXiv:1902.08129)"
PAPER_GROWTH = math.pi / (math.pi - 1)   # ReLU, batch -> infinity (Cor. 3.12)
SKIP = (1, 1)


@dataclasses.dataclass(frozen=True)
class Config:
    """depths: Linear layers per MLP (output layer included); batches: the batch sweep, at depths[-1]."""

    depths: tuple[int, ...] = (10, 20, 30, 50)
    width: int = 256
    batch: int = 128
    batches: tuple[int, ...] = (8, 16, 32, 128)


FULL = Config()
QUICK = Config(depths=(8, 16), width=128, batch=64, batches=(16, 64))


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    """One recorded step per (plain/residual, depth) at the main batch, and per batch at the deepest depth."""
    cfg = config(settings)
    points = [(res, d, cfg.batch) for res in (False, True) for d in cfg.depths]
    points += [(False, cfg.depths[-1], b) for b in cfg.batches if b != cfg.batch]
    return [run_spec(f"{'residual' if res else 'plain'}/depth={d}/batch={b}/s{seed}", seed=seed, data="gaussian",
                     net=NetSpec(depth=d, width=cfg.width, activation="relu", norm="batch", residual=res),
                     train=TrainSpec(steps=1, batch=b), residual=res, depth=d, batch=b)
            for res, d, b in points for seed in range(settings.seeds)]


def norms2(record: Any) -> list[float]:
    """Squared gradient norms at step 0, input side first: ||dL/dh|| of every hidden Linear (plain), or
    of every residual block's output x + ReLU(...) (residual: out_grad_norm of the ReLU that ends the block)."""
    if record.spec.tag("residual"):
        return [g**2 for g in at_init(record, kind="ReLU", where=".branch.")]
    return [g**2 for g in at_init(record)[:-1]]


def _point(results: Results, residual: bool, depth: int, batch: int) -> dict[str, Any]:
    n2 = [norms2(r) for r in results.select(residual=residual, depth=depth, batch=batch)]
    return {"residual": residual, "depth": depth, "batch": batch, "norms2": n2[0],
            "growth": mean_spread([growth(n, SKIP) for n in n2]),
            "late_growth": mean_spread([growth(n[len(n) // 2:], (0, SKIP[1])) for n in n2]),
            "log10_ratio": mean_spread([math.log10(ratio(n)) for n in n2])}


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """Growth per layer vs depth (plain, residual) and vs batch, with the theory and the paper."""
    cfg = config(settings)
    relu = theory.resolve("relu")
    depth_rows = [_point(results, res, d, cfg.batch) for res in (False, True) for d in cfg.depths]
    batch_rows = [_point(results, False, cfg.depths[-1], b) for b in sorted(set(cfg.batches) | {cfg.batch})]
    for row in batch_rows:
        row["theory"] = theory.batchnorm_growth(relu, row["batch"])
    out = {"paper": PAPER, "config": dataclasses.asdict(cfg), "paper_growth": PAPER_GROWTH,
           "theory_growth": theory.batchnorm_growth(relu, cfg.batch), "depth_sweep": depth_rows,
           "batch_sweep": batch_rows, "summary": _summary(depth_rows, batch_rows, cfg)}
    out["table"] = {"header": COMPARISON_HEADERS, "rows": comparison(out)}
    out["notes"] = [f"paper: {PAPER}"]
    return out


def _fit(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(xs, ys, 1)[0]) if len(xs) > 1 else math.nan


def _summary(depth_rows: list[dict], batch_rows: list[dict], cfg: Config) -> dict[str, Any]:
    deepest = max(cfg.depths)
    plain = next(r for r in depth_rows if r["depth"] == deepest and not r["residual"])
    res = next(r for r in depth_rows if r["depth"] == deepest and r["residual"])
    predicted = theory.batchnorm_growth(theory.resolve("relu"), cfg.batch)
    p_rows = [r for r in depth_rows if not r["residual"]]
    r_rows = [r for r in depth_rows if r["residual"]]
    return {"depth": deepest, "batch": cfg.batch, "plain_growth": plain["growth"]["mean"],
            "plain_growth_sd": plain["growth"]["std"], "residual_growth": res["growth"]["mean"],
            "residual_growth_sd": res["growth"]["std"], "residual_late_growth": res["late_growth"]["mean"],
            "plain_ratio": 10 ** plain["log10_ratio"]["mean"], "residual_ratio": 10 ** res["log10_ratio"]["mean"],
            "theory_growth": predicted, "paper_growth": PAPER_GROWTH,
            "vs_theory": plain["growth"]["mean"] / predicted - 1, "vs_paper": plain["growth"]["mean"] / PAPER_GROWTH - 1,
            # log10 ratio vs depth: linear for plain (exponential growth), vs log depth for residual (power law)
            "plain_log10_ratio_per_layer": _fit([r["depth"] for r in p_rows], [r["log10_ratio"]["mean"] for r in p_rows]),
            "residual_power": _fit([math.log10(r["depth"]) for r in r_rows], [r["log10_ratio"]["mean"] for r in r_rows])}


COMPARISON_HEADERS = ["quantity", "paper", "graddoctor.theory", "measured", "where they differ"]


def comparison(analysis: dict[str, Any]) -> list[list[Any]]:
    """Rows of (quantity, paper, graddoctor.theory, measured, where they differ)."""
    s, cfg = analysis["summary"], analysis["config"]
    rows = [[f"growth of ||dL/dh||^2 per layer, BN-ReLU, batch {s['batch']}, depth {s['depth']}",
             f"{PAPER_GROWTH:.3f} = pi/(pi-1) (batch -> inf)", f"{s['theory_growth']:.3f}",
             f"{s['plain_growth']:.3f} ± {s['plain_growth_sd']:.3f}",
             f"{100 * s['vs_paper']:+.1f} % vs the paper's infinite-batch value, {100 * s['vs_theory']:+.1f} % vs "
             f"the finite-batch theory (width {cfg['width']})"]]
    for row in analysis["batch_sweep"]:
        rows.append([f"  at batch {row['batch']}", "grows as the batch shrinks", f"{row['theory']:.3f}",
                     f"{row['growth']['mean']:.3f} ± {row['growth']['std']:.3f}",
                     f"{100 * (row['growth']['mean'] / row['theory'] - 1):+.1f} % vs theory"])
    rows.append([f"first/last gradient ratio at depth {s['depth']}", "exponential in depth", "-",
                 f"{s['plain_ratio']:.3g} plain, {s['residual_ratio']:.3g} residual",
                 f"plain: log10 ratio +{s['plain_log10_ratio_per_layer']:.3f} per layer "
                 f"(sqrt growth: {math.log10(s['theory_growth']) / 2:.3f}); residual: ratio ~ depth^{s['residual_power']:.2f}"])
    rows.append([f"residual x + ReLU(BN(Wx)), growth per layer, depth {s['depth']}", "removed (no exponential growth)",
                 "-", f"{s['residual_growth']:.3f} ± {s['residual_growth_sd']:.3f} (deep half: {s['residual_late_growth']:.3f})",
                 "not exactly 1: the residual stream's variance grows ~ depth, so early blocks still amplify (a power law)"])
    return rows


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The comparison table and three figures: per-layer norms, ratio vs depth, growth vs batch."""
    from ._paper_common import axes, lines

    s = analysis["summary"]
    with page.section("BatchNorm gradient explosion vs the paper", anchor="bn-explosion"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(COMPARISON_HEADERS, analysis["table"]["rows"], text_columns=(0, 4))
        fig, ax = axes()
        for row in (r for r in analysis["depth_sweep"] if r["depth"] == s["depth"]):
            ax.plot(range(len(row["norms2"])), row["norms2"], "o-", ms=3, label="residual" if row["residual"] else "plain")
        n = next(r["norms2"] for r in analysis["depth_sweep"] if r["depth"] == s["depth"] and not r["residual"])
        ref = len(n) - 1 - SKIP[1]
        ax.plot(range(len(n)), [n[ref] * s["theory_growth"] ** (ref - i) for i in range(len(n))], "k--",
                label=f"theory x{s['theory_growth']:.3f} per layer")
        lines(ax, [], {}, xlabel="hidden Linear (input side left)", ylabel="||dL/dh||^2 at init", logy=True)
        page.figure(fig, f"Seed 0, depth {s['depth']}, batch {s['batch']}: plain grows x{s['plain_growth']:.3f} per "
                         f"layer toward the input, residual x{s['residual_growth']:.3f}.")
        fig, ax = axes()
        for res, label in ((False, "plain BN-ReLU"), (True, "residual")):
            rows = [r for r in analysis["depth_sweep"] if r["residual"] == res]
            lines(ax, [r["depth"] for r in rows], {label: [r["log10_ratio"]["mean"] for r in rows]},
                  errors={label: [r["log10_ratio"]["std"] for r in rows]},
                  xlabel="depth (Linear layers)", ylabel="log10 ||dL/dh|| first / last")
        page.figure(fig, "Gradient ratio first/last hidden layer vs depth: linear in depth (exponential) for plain "
                         "BN-ReLU, slow (a power law) with residual blocks.")
        fig, ax = axes()
        b = analysis["batch_sweep"]
        lines(ax, [r["batch"] for r in b], {"measured": [r["growth"]["mean"] for r in b],
                                            "finite-batch theory": [r["theory"] for r in b]},
              errors={"measured": [r["growth"]["std"] for r in b]}, xlabel="batch size", ylabel="growth per layer")
        ax.axhline(PAPER_GROWTH, color="k", ls=":")
        ax.set_xscale("log")
        page.figure(fig, f"Per-layer growth vs batch size at depth {s['depth']}; dotted: the paper's pi/(pi-1).")


STUDY = Study(
    name=NAME,
    title="BatchNorm's gradient explosion at init (Yang et al. 2019)",
    summary="Per-layer growth of ||dL/dh||^2 at initialization in deep Linear-BatchNorm-ReLU MLPs vs depth and "
            "batch size, against pi/(pi-1) and the finite-batch theory; residual blocks remove the exponential growth.",
    runs=runs, analyse=analyse, report=report)
