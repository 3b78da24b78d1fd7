"""Study `rnn-through-time`: the gradient through time of a tanh RNN, an LSTM and a GRU on first-token recall.

Papers: S. Hochreiter, "Untersuchungen zu dynamischen neuronalen Netzen" (diploma thesis, 1991);
Y. Bengio, P. Simard, P. Frasconi, "Learning long-term dependencies with gradient descent is
difficult", IEEE TNN 1994; R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training
recurrent neural networks", ICML 2013 (Sec. 2-3: the bound gamma sigma_max(W_hh) per step, gradient
clipping); S. Hochreiter, J. Schmidhuber, "Long short-term memory", Neural Computation 1997;
Q. Le, N. Jaitly, G. Hinton, "A simple way to initialize recurrent networks of rectified linear
units", 2015 (IRNN: ReLU RNN, W_hh = I).

Here: the lab's `recall-T` task (a key, one of 4 symbols, then T - 1 distractors from 4 other
symbols, as in Hochreiter & Schmidhuber's Experiment 2; the label is the key: chance 1/4, only the
gradient through all T steps can teach it), Embedding(8, 16) -> one recurrent layer of 32 units ->
a classifier of the last step, so the loss is l_T alone and the watch's `in_grad_norm_t` of the
recurrent layer is ||d l_T / d x_t|| (summed over the batch). The LSTM twice: with the chrono init
(Tallec & Ollivier 2018; the swap_cell remedy's: forget bias log u, input bias -log u, u ~ U[1, T-1])
and with forget bias 1 (Gers et al. 2000; PyTorch's 0 starts the forget gates at 1/2). Adam, lr
1e-2, batch 64, the global norm clipped to 1 (Le et al. 2015 clip every model); W_hh's bound
(gamma sigma_max, spectral radius) from the watch's `hh_*` statistics. Exploding: the tanh RNN with
W_hh rescaled to spectral radius 1.5 at T = 50, trained with SGD (lr 0.05, momentum 0.9), with and
without clipping the global norm to 1 (Pascanu et al.'s remedy; under Adam the step size does not
follow the gradient's size, so the explosion would not show in the updates).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ...train.sequence import SeqNetSpec
from ...train.spec import RunSpec, TrainSpec, run_spec
from ..results import Record, Results, fmt_spread, mean_spread
from ..study import Settings, Study
from ..verdicts import claim

NAME = "rnn-through-time"
PAPER = ("Hochreiter 1991; Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013 (arXiv:1211.5063); "
         "Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015 (arXiv:1504.00941)")
LAYER = "rnn"
CHANCE = 0.25
RADIUS = 1.5          # W_hh's spectral radius in the exploding runs
SUCCESS = 0.9          # test accuracy that counts as "learned the length"
VARIANTS = {  # key: (label, SeqNetSpec fields)
    "rnn": ("tanh RNN, default init", {"kind": "rnn"}),
    "rnn-orthogonal": ("tanh RNN, orthogonal W_hh", {"kind": "rnn", "init": "orthogonal"}),
    "irnn": ("ReLU RNN, W_hh = I (IRNN)", {"kind": "rnn", "nonlinearity": "relu", "init": "identity"}),
    "lstm": ("LSTM, chrono init", {"kind": "lstm", "init": "chrono"}),
    "lstm-forget1": ("LSTM, forget bias 1", {"kind": "lstm", "forget_bias": 1.0}),
    "gru": ("GRU", {"kind": "gru"}),
}
CLIP = 1.0             # the length runs' global-norm clipping (Le et al. 2015 clip every model's gradient)


@dataclasses.dataclass(frozen=True)
class Config:
    lengths: tuple[int, ...] = (25, 50, 100, 200)
    variants: tuple[str, ...] = tuple(VARIANTS)
    steps: int = 600
    explode_length: int = 50
    explode_steps: int = 300
    every: int = 50


FULL = Config()
QUICK = Config(lengths=(8, 32), variants=("rnn", "lstm"), steps=60, explode_length=8, explode_steps=60, every=5)


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    cfg = config(settings)
    adam = TrainSpec(optimizer="adam", lr=1e-2, batch=64, steps=cfg.steps, every=cfg.every, clip=CLIP)
    specs = [run_spec(f"{key}/T={length}/s{seed}", net=SeqNetSpec(hidden=32, **VARIANTS[key][1]), train=adam, seed=seed,
                      data=f"recall-{length}", part="length", variant=key, length=length)
             for length in sorted(cfg.lengths, reverse=True) for key in cfg.variants for seed in range(settings.seeds)]
    sgd = TrainSpec(optimizer="sgd", lr=0.05, momentum=0.9, batch=64, steps=cfg.explode_steps, every=cfg.every)
    for clip in (None, 1.0):
        train = dataclasses.replace(sgd, clip=clip)
        specs += [run_spec(f"radius{RADIUS:g}/clip={clip}/s{seed}", net=SeqNetSpec(kind="rnn", hidden=32, radius=RADIUS),
                           train=train, seed=seed, data=f"recall-{cfg.explode_length}", part="explode",
                           clip="none" if clip is None else f"{clip:g}")
                  for seed in range(settings.seeds)]
    return specs


def profile(record: Record, row: int = 0) -> dict[str, Any]:
    """||d l_T / d x_t|| over t at recorded step `row` (0: init), its geometric fit, and W_hh's bound there."""
    view = record.view()
    values, edges = view.time_stat("in_grad_norm_t", LAYER)
    rows = np.flatnonzero(~np.all(np.isnan(values), axis=1))
    g = values[rows[row]].astype(float)
    centres = (np.asarray(edges[:-1]) + np.asarray(edges[1:]) - 1) / 2.0
    keep = np.isfinite(g) & (g > 0)
    factor = r2 = math.nan
    if keep.sum() >= 3:
        y = np.log(g[keep])
        slope, icept = np.polyfit(centres[keep], y, 1)
        factor = float(math.exp(-slope))
        resid = y - (slope * centres[keep] + icept)
        r2 = float(1 - resid.var() / y.var()) if y.var() > 0 else 1.0
    sigma, _ = view.time_stat("hh_sigma_max", LAYER)
    radius, _ = view.time_stat("hh_radius", LAYER)
    gamma, _ = view.time_stat("hh_gamma", LAYER)
    b_rows = np.flatnonzero(~np.all(np.isnan(sigma), axis=1))
    b = b_rows[0] if row == 0 else b_rows[-1]
    bound = gamma[b] * sigma[b]
    k = int(np.nanargmax(bound))
    return {"step": int(view.steps[rows[row]]), "grads": [float(v) for v in g], "edges": [int(e) for e in edges],
            "factor_per_step": factor, "fit_r2": r2, "ratio_first_to_last": float(g[0] / g[-1]) if g[-1] > 0 else math.nan,
            "zero_frac": float(np.mean(g == 0)), "bound": float(bound[k]), "radius": float(np.nanmax(radius[b])),
            "sigma_max": float(np.nanmax(sigma[b])), "bound_step": int(view.steps[b])}


def _cell(results: Results, key: str, length: int) -> dict[str, Any]:
    records = results.select(part="length", variant=key, length=length)
    acc = results.metric("test_accuracy", part="length", variant=key, length=length)
    init = [profile(r, 0) for r in records]
    end = [profile(r, -1) for r in records]
    return {"variant": key, "label": VARIANTS[key][0], "length": length, "test_accuracy": mean_spread(acc),
            "success_rate": float(np.mean(acc >= SUCCESS)) if len(acc) else math.nan,
            "init_factor": mean_spread([p["factor_per_step"] for p in init]),
            "init_r2": mean_spread([p["fit_r2"] for p in init]),
            "init_bound": mean_spread([p["bound"] for p in init]), "init_radius": mean_spread([p["radius"] for p in init]),
            "init_log10_ratio": mean_spread([math.log10(p["ratio_first_to_last"]) if p["ratio_first_to_last"] > 0 else math.nan
                                             for p in init]),
            "end_log10_ratio": mean_spread([math.log10(p["ratio_first_to_last"]) if p["ratio_first_to_last"] > 0 else math.nan
                                            for p in end]),
            "end_factor": mean_spread([p["factor_per_step"] for p in end]), "end_bound": mean_spread([p["bound"] for p in end]),
            "init_profile": init[0]["grads"], "end_profile": end[0]["grads"], "edges": init[0]["edges"]}


def _longest(cells: list[dict[str, Any]], key: str) -> int:
    """The longest length whose success rate over seeds is >= 1/2 (0: none)."""
    return max([c["length"] for c in cells if c["variant"] == key and c["success_rate"] >= 0.5], default=0)


def _explode(results: Results, clip: str) -> dict[str, Any]:
    records = results.select(part="explode", clip=clip)
    init = [profile(r, 0) for r in records]
    return {"clip": clip, "test_accuracy": mean_spread(results.metric("test_accuracy", part="explode", clip=clip)),
            "final_loss": mean_spread(results.metric("final_loss", part="explode", clip=clip)),
            "init_factor": mean_spread([p["factor_per_step"] for p in init]),
            "init_bound": mean_spread([p["bound"] for p in init]), "init_radius": mean_spread([p["radius"] for p in init]),
            "init_grad_norm": mean_spread([_total_grad_norm(r) for r in records]),
            "max_grad_norm": mean_spread([float(np.max(_global_grad_norms(r))) for r in records]),
            "median_grad_norm": mean_spread([float(np.median(_global_grad_norms(r))) for r in records]),
            "loss_curve": np.nanmean([[np.nan if v is None else v for v in r.metrics["losses"]] for r in records], axis=0).tolist()}


def _total_grad_norm(record: Record) -> float:
    """The global gradient norm at step 0, from the per-layer grad_norm (as recorded: after clipping, if any)."""
    return float(_global_grad_norms(record)[0])


def _global_grad_norms(record: Record) -> np.ndarray:
    """The global gradient norm at every recorded step, from the per-layer grad_norm (non-finite layers left out)."""
    view = record.view()
    per_layer = np.stack([np.asarray(view.stat("grad_norm", name), dtype=float) for name in view.layers])
    return np.sqrt(np.sum(np.where(np.isfinite(per_layer), per_layer, 0.0) ** 2, axis=0))


def _geometric_claim(cells: list[dict[str, Any]], explode: list[dict[str, Any]]) -> dict[str, Any]:
    plain = [c for c in cells if c["variant"] == "rnn" and c["length"] >= 20] or [c for c in cells if c["variant"] == "rnn"]
    within = all(c["init_factor"]["max"] <= 1.02 * c["init_bound"]["min"] for c in plain)
    decays = all(c["init_factor"]["max"] < 1 for c in plain)
    geometric = all(c["init_r2"]["min"] >= 0.9 for c in plain)
    verdict = "supported" if within and decays and geometric else "refuted" if not within else "qualified"
    longest = max(plain, key=lambda c: c["length"])
    rule = ("supported when, for the default tanh RNN at every length >= 20, the fitted per-step factor of "
            "||d l_T/d x_t|| at init is < 1, <= 1.02 x gamma*sigma_max(W_hh) and the log-linear fit has R^2 >= 0.9, and "
            "refuted when a factor exceeds the bound; else qualified")
    summary = (f"T={longest['length']}: factor {fmt_spread(longest['init_factor'])} per step, bound gamma*sigma_max "
               f"{fmt_spread(longest['init_bound'])}, radius {fmt_spread(longest['init_radius'])}, R^2 "
               f"{fmt_spread(longest['init_r2'], 2)}; radius {RADIUS:g}: factor {fmt_spread(explode[0]['init_factor'])}, bound "
               f"{fmt_spread(explode[0]['init_bound'])}")
    return claim("T1", "The gradient through time decays geometrically, by at most the factor gamma*sigma_max(W_hh) "
                 "per step (Pascanu et al. 2013)", verdict, rule,
                 {"within_bound": within, "decays": decays, "geometric": geometric}, summary)


def _lstm_claim(cells: list[dict[str, Any]], cfg: Config) -> dict[str, Any]:
    rnn, lstm = _longest(cells, "rnn"), _longest(cells, "lstm")
    beyond = [L for L in cfg.lengths if L > rnn]
    gap = None
    if beyond:
        at = min(beyond)
        acc = {c["variant"]: c["test_accuracy"]["mean"] for c in cells if c["length"] == at}
        gap = acc["lstm"] - acc["rnn"]
    verdict = "supported" if lstm > rnn else "qualified" if gap is not None and gap >= 0.1 else "refuted"
    rule = (f"longest length learned (test accuracy >= {SUCCESS} in at least half the seeds): supported when the "
            "LSTM's is longer than the tanh RNN's; qualified when equal but the LSTM's accuracy at the next length is "
            ">= 0.1 higher; else refuted")
    others = [(k, VARIANTS[k][0]) for k in ("lstm-forget1", "gru") if k in cfg.variants]
    summary = f"longest length learned: RNN {rnn or 'none'}, LSTM (chrono) {lstm or 'none'}" + "".join(
        f", {label} {_longest(cells, k) or 'none'}" for k, label in others)
    return claim("T2", "The LSTM learns lengths the tanh RNN cannot (Hochreiter & Schmidhuber 1997)", verdict, rule,
                 {"rnn_longest": rnn, "lstm_longest": lstm, "accuracy_gap_next_length": gap}, summary)


def _clip_claim(explode: list[dict[str, Any]]) -> dict[str, Any]:
    none, clip = explode
    gain = clip["test_accuracy"]["mean"] - none["test_accuracy"]["mean"]
    learned = clip["test_accuracy"]["mean"] >= SUCCESS
    verdict = "supported" if gain >= 0.1 and learned else "qualified" if gain >= 0.1 or (learned and gain > 0) else "refuted"
    rule = (f"supported when clipping the global norm to 1 raises the radius-1.5 RNN's test accuracy by >= 0.1 (mean over "
            f"seeds) and the clipped run learns (>= {SUCCESS}); qualified when only one holds; else refuted")
    summary = (f"radius 1.5, SGD: test accuracy {fmt_spread(none['test_accuracy'])} unclipped, "
               f"{fmt_spread(clip['test_accuracy'])} clipped; unclipped global grad norm at init "
               f"{fmt_spread(none['init_grad_norm'])}, at most {fmt_spread(none['max_grad_norm'])} over the recorded steps")
    return claim("T3", "Gradient clipping rescues runs whose gradients explode through time (Pascanu et al. 2013)",
                 verdict, rule, {"accuracy_gain": gain, "clipped_learns": learned}, summary)


def _init_claim(cells: list[dict[str, Any]], cfg: Config) -> dict[str, Any] | None:
    if "rnn-orthogonal" not in cfg.variants:
        return None
    base, orth, irnn = (_longest(cells, k) for k in ("rnn", "rnn-orthogonal", "irnn"))
    verdict = "supported" if orth > base and irnn > base else "qualified" if max(orth, irnn) > base else "refuted"
    rule = ("longest length learned: supported when both the orthogonal tanh RNN's and the IRNN's exceed the default tanh "
            "RNN's; qualified when one does; else refuted")
    return claim("T4", "Orthogonal and identity (IRNN) W_hh let a plain RNN learn longer dependencies (Le et al. 2015)",
                 verdict, rule, {"rnn_longest": base, "orthogonal_longest": orth, "irnn_longest": irnn},
                 f"longest length learned: default {base or 'none'}, orthogonal {orth or 'none'}, IRNN {irnn or 'none'}")


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """Per (variant, length): accuracy, success rate, the gradient-through-time profile at init and at the end, the bound."""
    cfg = config(settings)
    cells = [_cell(results, key, length) for length in cfg.lengths for key in cfg.variants]
    explode = [_explode(results, "none"), _explode(results, "1")]
    claims = [_geometric_claim(cells, explode), _lstm_claim(cells, cfg), _clip_claim(explode)]
    claims += [c for c in [_init_claim(cells, cfg)] if c is not None]
    header = ["T", "model", "test accuracy", "learned", "factor/step at init", "gamma*sigma_max", "radius",
              "log10 g(0)/g(T-1) init", "end"]
    rows = [[c["length"], c["label"], fmt_spread(c["test_accuracy"]), f"{c['success_rate']:.2f}", fmt_spread(c["init_factor"]),
             fmt_spread(c["init_bound"]), fmt_spread(c["init_radius"]), fmt_spread(c["init_log10_ratio"], 2),
             fmt_spread(c["end_log10_ratio"], 2)] for c in cells]
    return {"paper": PAPER, "config": dataclasses.asdict(cfg), "cells": cells, "explode": explode, "claims": claims,
            "table": {"header": header, "rows": rows},
            "notes": [f"chance accuracy {CHANCE}; 'learned' = fraction of seeds with test accuracy >= {SUCCESS}",
                      f"paper: {PAPER}"]}


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The table, the profiles at init and at the end of the longest length, accuracy against length, the clipping curves."""
    from ._paper_common import axes, lines

    cfg = analysis["config"]
    t = analysis["table"]
    with page.section("Gradient through time and memory length", anchor="rnn-through-time"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(t["header"], t["rows"])
        longest = max(cfg["lengths"])
        fig, ax = axes(ncols=2)
        for a, when in zip(ax, ("init", "end")):
            for c in (c for c in analysis["cells"] if c["length"] == longest):
                g = np.asarray(c[f"{when}_profile"], dtype=float)
                a.semilogy(np.asarray(c["edges"][:-1]), np.where(g > 0, g, np.nan), label=c["label"])
            a.set_xlabel("time step t")
            a.set_ylabel("||d l_T / d x_t||")
            a.set_title(f"T = {longest}, {'step 0' if when == 'init' else 'last recorded step'}")
            a.grid(alpha=0.3)
            a.legend(fontsize=7)
        page.figure(fig, "Gradient of the last step's loss reaching each input step (seed 0); gaps: exactly 0 "
                         "(below float32).")
        fig, ax = axes()
        acc = {VARIANTS[k][0]: [next(c["test_accuracy"]["mean"] for c in analysis["cells"]
                                     if c["variant"] == k and c["length"] == L) for L in cfg["lengths"]]
               for k in cfg["variants"]}
        lines(ax, cfg["lengths"], acc, xlabel="sequence length T", ylabel="test accuracy (mean over seeds)")
        ax.axhline(CHANCE, ls="--", c="grey")
        page.figure(fig, "First-token recall: test accuracy against length; dashed: chance.")
        fig, ax = axes()
        for e in analysis["explode"]:
            ax.plot(e["loss_curve"], label=f"clip {e['clip']}")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss (minibatch)")
        ax.legend()
        page.figure(fig, f"Radius-1.5 tanh RNN (T = {cfg['explode_length']}, SGD): with and without clipping.")


STUDY = Study(
    name=NAME,
    title="Gradients through time: tanh RNN, LSTM, GRU on first-token recall (Bengio 1994, Pascanu 2013)",
    summary="Trains a tanh RNN (default, orthogonal and IRNN inits), an LSTM (chrono init, forget bias 1) and a GRU on "
            "first-token recall over lengths 25-200; measures ||d l_T/d x_t|| against t at init and at the end beside the Pascanu bound "
            "gamma*sigma_max(W_hh), the longest length each learns, and clipping on a radius-1.5 RNN.",
    runs=runs, analyse=analyse, report=report)
