"""Study `lr-sensitivity`: qk-layernorm and z-loss widen a small transformer's stable learning-rate range (Wortsman et al. 2023).

Paper: M. Wortsman, P. J. Liu, L. Xiao, K. Everett, A. Alemi, B. Adlam, J. D. Co-Reyes, I. Gur,
A. Kumar, R. Novak, J. Pennington, J. Sohl-Dickstein, K. Xu, J. Lee, J. Gilmer, S. Kornblith,
"Small-scale proxies for large-scale Transformer training instabilities", ICLR 2024
(arXiv:2309.14322). Sec. 3.1: without qk-layernorm the attention logits grow at high learning
rates and the loss diverges (attention logit growth, after Dehghani et al. 2023); qk-layernorm
removes it. Sec. 3.2: the output logits drift to large negative log Z (output logit divergence);
the z-loss 1e-4 (log Z)^2 (Chowdhery et al. 2022) keeps log Z near 0. Fig. 1 and Eq. 1: "LR
sensitivity" = E over the swept learning rates of min(l(lr), l_0) - l*, smaller is better; with
both remedies small models train over a wider range of learning rates.

Here: the lab's pre-LN causal character transformer (2 blocks, width 64, 4 heads, context 32) on
`chars-32` (Python stdlib sources), Adam with a linear warm-up over the first 10 % of the steps and
then a constant learning rate, over learning rates 1e-3 to 3e-1; each lr with and without
qk-layernorm alone, z-loss (1e-4) alone, and both (the paper reports each remedy apart). l(lr) is the final test loss (nats per character; a diverged run
counts as l_0), l_0 the loss at init, l* the best over every run of the study. Attention
statistics recorded every 10 steps. The output-logit divergence (W3) needs a longer training: each
variant at the highest lr for 1000 steps, attention and log Z every 20 steps; W3 compares z-loss
against none with qk-layernorm in both (without it the attention-logit instability of W2 drives
the loss and log Z at that lr, whatever the z-loss does).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ...train.sequence import SeqNetSpec
from ...train.spec import RunSpec, TrainSpec, run_spec
from ..results import Results, fmt_spread, mean_spread
from ..study import Settings, Study
from ..verdicts import claim
from ._transformer_common import final, first_loss, peak, series

NAME = "lr-sensitivity"
PAPER = "Wortsman et al. 2023, Small-scale proxies for large-scale Transformer training instabilities (arXiv:2309.14322)"
DATA = "chars-32"
Z = 1e-4
VARIANTS = {  # key: (label, qk_norm, z_loss)
    "base": ("no remedy", False, 0.0),
    "qk": ("qk-layernorm", True, 0.0),
    "z": ("z-loss", False, Z),
    "qk+z": ("qk-layernorm + z-loss", True, Z),
}
STABLE = 0.1  # nats/char above the study's best loss: the run is "within the stable range"


@dataclasses.dataclass(frozen=True)
class Config:
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
    variants: tuple[str, ...] = tuple(VARIANTS)
    depth: int = 2
    width: int = 64
    steps: int = 200
    long_steps: int = 1000   # W3: the long_variants at the highest lr, trained this long
    long_variants: tuple[str, ...] = ("base", "z", "qk", "qk+z")   # W3 needs "qk" and "qk+z"


FULL = Config()
QUICK = Config(lrs=(3e-3, 3e-1), variants=("base", "qk+z"), width=32, steps=30, long_steps=40,
               long_variants=("qk", "qk+z"))


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    cfg = config(settings)
    specs = []
    for lr in sorted(cfg.lrs, reverse=True):  # the highest first: the claims lean on it most
        for key in cfg.variants:
            _, qk, z = VARIANTS[key]
            train = TrainSpec(optimizer="adam", lr=lr, batch=32, steps=cfg.steps, warmup=cfg.steps // 10, every=5,
                              attention_every=10 if not settings.quick else 5, z_loss=z)
            net = SeqNetSpec(kind="transformer", depth=cfg.depth, width=cfg.width, heads=4, norm_first=True, qk_norm=qk)
            specs += [run_spec(f"{key}/lr={lr:g}/s{seed}", net=net, train=train, seed=seed, data=DATA, variant=key, lr=lr)
                      for seed in range(settings.seeds)]
    top = max(cfg.lrs)
    for key in cfg.long_variants:  # tagged variant="long:KEY"; the output-logit divergence needs longer than the sweep's steps (Wortsman et al. Sec. 3.2)
        every = 5 if settings.quick else 20
        train = TrainSpec(optimizer="adam", lr=top, batch=32, steps=cfg.long_steps, warmup=cfg.steps // 10, every=every,
                          attention_every=every, z_loss=VARIANTS[key][2])
        net = SeqNetSpec(kind="transformer", depth=cfg.depth, width=cfg.width, heads=4, norm_first=True, qk_norm=VARIANTS[key][1])
        specs += [run_spec(f"long/{key}/lr={top:g}/s{seed}", net=net, train=train, seed=seed, data=DATA,
                           variant=f"long:{key}", lr=top) for seed in range(settings.seeds)]
    return specs


def _point(results: Results, key: str, lr: float) -> dict[str, Any]:
    records = results.select(variant=key, lr=lr)
    l0 = [first_loss(r) for r in records]
    test = [r.metric("test_loss") for r in records]
    loss = [t if math.isfinite(t) and not r.metrics.get("diverged") else l for t, l, r in zip(test, l0, records)]
    lse = [series(r, "logit_lse_mean") for r in records]
    return {"variant": key, "lr": lr, "test_loss": mean_spread(loss), "loss_at_init": mean_spread(l0),
            "diverged": sum(bool(r.metrics.get("diverged")) for r in records),
            "attn_logit_max_peak": mean_spread([peak(r, "attn_logit_max") for r in records]),
            "attn_logit_max_final": mean_spread([final(r, "attn_logit_max") for r in records]),
            "log_z_final": mean_spread([final(r, "logit_lse_mean") for r in records]),
            "log_z_extreme": mean_spread([_extreme(values) for _, values in lse]),
            "attn_curve": _curve(records[0], "attn_logit_max"), "lse_curve": _curve(records[0], "logit_lse_mean")}


def _extreme(values: np.ndarray) -> float:
    """The value of largest magnitude over sites and steps (NaN when none)."""
    flat = values[np.isfinite(values)] if values.size else values
    return float(flat[np.argmax(np.abs(flat))]) if flat.size else math.nan


def _curve(record: Any, stat: str) -> list[list[float]]:
    steps, values = series(record, stat)
    return [steps.tolist(), (np.nanmax(values, axis=0) if values.size else values).tolist()]


def sensitivity(points: list[dict[str, Any]], key: str, best: float) -> dict[str, float]:
    """Wortsman et al.'s LR sensitivity E_lr[min(l(lr), l_0) - l*] and the stable range of `key`."""
    mine = [p for p in points if p["variant"] == key]
    gaps = [min(p["test_loss"]["mean"], p["loss_at_init"]["mean"]) - best for p in mine]
    stable = [p["lr"] for p in mine if p["test_loss"]["mean"] <= best + STABLE]
    return {"lr_sensitivity": float(np.mean(gaps)), "stable_lrs": len(stable),
            "stable_decades": float(math.log10(max(stable) / min(stable))) if stable else 0.0,
            "stable_min": min(stable) if stable else None, "stable_max": max(stable) if stable else None}


def _at(points: list[dict[str, Any]], key: str, lr: float) -> dict[str, Any]:
    return next(p for p in points if p["variant"] == key and p["lr"] == lr)


def _range_claim(cid: str, key: str, sens: dict[str, dict[str, float]], cfg: Config) -> dict[str, Any]:
    """`key`'s stable range and LR sensitivity against no remedy's."""
    base, mine = sens["base"], sens[key]
    wider = mine["stable_lrs"] > base["stable_lrs"]
    lower = mine["lr_sensitivity"] < base["lr_sensitivity"] - 0.02
    verdict = "supported" if wider and lower else "qualified" if wider or lower else "refuted"
    label = VARIANTS[key][0]
    what = "qk-layernorm and z-loss together widen" if key == "qk+z" else f"{label} alone widens"
    return claim(cid, f"{what} the range of learning rates a small transformer trains at (lower LR sensitivity)", verdict,
                 f"supported when, with {label}, more swept learning rates end within {STABLE} nats/char of the study's "
                 "best test loss and the LR sensitivity (Eq. 1) is lower by > 0.02; qualified when one holds; else refuted",
                 {"base": base, key: mine},
                 f"stable lrs {base['stable_lrs']} -> {mine['stable_lrs']} of {len(cfg.lrs)}; LR sensitivity "
                 f"{base['lr_sensitivity']:.3f} -> {mine['lr_sensitivity']:.3f}")


def _z_claim(long: dict[str, dict[str, Any]], top: float, cfg: Config) -> dict[str, Any]:
    """z-loss against none where qk-layernorm has removed the attention-logit instability (the loss's other cause at a
    high lr: W2), so what is left to the z-loss is the output logits; the pair without qk-layernorm is reported beside."""
    lz = {k: math.inf if p["diverged"] else abs(p["log_z_extreme"]["mean"]) for k, p in long.items()}  # NaN: unrecorded
    verdict = "supported" if lz["qk+z"] < 0.5 * lz["qk"] else "qualified" if lz["qk+z"] < lz["qk"] else "refuted"
    return claim("W3", "z-loss keeps the output log Z near 0", verdict,
                 f"the largest |logit_lse_mean| over {cfg.long_steps} steps at lr {top:g}, both runs with qk-layernorm: "
                 "supported when with z-loss it is < half the value without; qualified when smaller; else refuted",
                 {"max_abs_log_z": lz, "final_log_z": {k: p["log_z_final"]["mean"] for k, p in long.items()},
                  "test_loss": {k: p["test_loss"]["mean"] for k, p in long.items()}},
                 f"{cfg.long_steps} steps at lr {top:g}, max |log Z| with qk-layernorm: {lz['qk']:.3g} without z-loss, "
                 f"{lz['qk+z']:.3g} with (test loss {long['qk']['test_loss']['mean']:.3f} -> "
                 f"{long['qk+z']['test_loss']['mean']:.3f})" + (f"; without qk-layernorm: {lz['base']:.3g} -> {lz['z']:.3g}"
                                                                 if {"base", "z"} <= set(lz) else ""))


def _claims(points: list[dict[str, Any]], sens: dict[str, dict[str, float]], long: dict[str, dict[str, Any]],
            cfg: Config) -> list[dict[str, Any]]:
    top, low = max(cfg.lrs), min(cfg.lrs)
    qkey = "qk" if "qk" in cfg.variants else "qk+z"  # qk-layernorm alone where the study has it
    grow = {k: _at(points, k, top)["attn_logit_max_peak"]["mean"] for k in ("base", qkey)}
    small = _at(points, "base", low)["attn_logit_max_peak"]["mean"]
    base_grows = grow["base"] >= 5 * small and grow["base"] >= 3 * grow[qkey]
    l2 = "supported" if base_grows else "qualified" if grow["base"] > grow[qkey] else "refuted"
    claims = [_range_claim("W1", "qk+z", sens, cfg),
              claim("W2", "Without qk-layernorm the attention logits grow at high learning rates; with it they stay small", l2,
                    f"peak attn_logit_max at lr {top:g}: supported when without remedies it is >= 5x its value at lr "
                    f"{low:g} and >= 3x the peak with {VARIANTS[qkey][0]}; qualified when it is just larger; else refuted",
                    {"peak_top_lr": grow, "peak_low_lr_base": small},
                    f"peak attention logit at lr {top:g}: {grow['base']:.3g} without, {grow[qkey]:.3g} with "
                    f"{VARIANTS[qkey][0]} (at lr {low:g}: {small:.3g})")]
    claims.append(_z_claim(long, top, cfg))
    if "qk" in cfg.variants:
        claims.append(_range_claim("W4", "qk", sens, cfg))
    return claims


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """Final test loss per (variant, lr), LR sensitivity and stable range per variant, attention logits and log Z."""
    cfg = config(settings)
    points = [_point(results, key, lr) for lr in cfg.lrs for key in cfg.variants]
    best = min(p["test_loss"]["mean"] for p in points)
    long = {k: _point(results, f"long:{k}", max(cfg.lrs)) for k in cfg.long_variants}
    sens = {key: sensitivity(points, key, best) for key in cfg.variants}
    names = " / ".join(k if k != "base" else "none" for k in cfg.variants)
    header = ["lr"] + [f"{VARIANTS[k][0]}: test loss" for k in cfg.variants] + [
        f"peak attn logit ({names})", f"max |log Z| ({names})"]
    rows = []
    for lr in cfg.lrs:
        p = {k: _at(points, k, lr) for k in cfg.variants}
        rows.append([f"{lr:g}"] + [fmt_spread(p[k]["test_loss"]) + (f" ({p[k]['diverged']} diverged)" if p[k]["diverged"] else "")
                                   for k in cfg.variants]
                    + [" / ".join(f"{p[k]['attn_logit_max_peak']['mean']:.3g}" for k in cfg.variants),
                       " / ".join(f"{abs(p[k]['log_z_extreme']['mean']):.3g}" for k in cfg.variants)])
    rows.append(["LR sensitivity"] + [f"{sens[k]['lr_sensitivity']:.3f}" for k in cfg.variants] + ["", ""])
    rows.append(["stable lrs"] + [f"{sens[k]['stable_lrs']}" for k in cfg.variants] + ["", ""])
    return {"paper": PAPER, "config": dataclasses.asdict(cfg), "points": points, "best_loss": best, "sensitivity": sens,
            "long": list(long.values()), "claims": _claims(points, sens, long, cfg), "table": {"header": header, "rows": rows},
            "notes": [f"best test loss over the study l* = {best:.3f} nats/char; stable: within {STABLE} of it",
                      f"paper: {PAPER}"]}


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The table, final loss against lr per variant, and the attention-logit and log Z curves at the highest lr."""
    from ._paper_common import axes, lines

    cfg = analysis["config"]
    t = analysis["table"]
    with page.section("Learning-rate sensitivity with and without qk-layernorm and z-loss", anchor="lr-sensitivity"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(t["header"], t["rows"])
        fig, ax = axes()
        loss = {VARIANTS[k][0]: [next(p["test_loss"]["mean"] for p in analysis["points"] if p["variant"] == k and p["lr"] == lr)
                                 for lr in cfg["lrs"]] for k in cfg["variants"]}
        lines(ax, cfg["lrs"], loss, xlabel="learning rate", ylabel="final test loss (nats/char)")
        ax.set_xscale("log")
        page.figure(fig, "Final test loss against learning rate (Wortsman et al. Fig. 1).")
        fig, ax = axes(ncols=2)
        top = max(cfg["lrs"])
        for k in cfg["variants"]:
            p = next(p for p in analysis["points"] if p["variant"] == k and p["lr"] == top)
            if p["attn_curve"][0]:
                ax[0].semilogy(p["attn_curve"][0], np.abs(p["attn_curve"][1]), label=VARIANTS[k][0])
            if p["lse_curve"][0]:
                ax[1].plot(p["lse_curve"][0], p["lse_curve"][1], label=VARIANTS[k][0])
        for p in analysis.get("long", []):
            if p["lse_curve"][0]:
                key = p["variant"].split(":", 1)[1]
                ax[1].plot(p["lse_curve"][0], p["lse_curve"][1], ls="--", label=f"{VARIANTS[key][0]}, {cfg['long_steps']} steps")
        ax[0].set(xlabel="step", ylabel="max attention logit (max over layers)")
        ax[1].set(xlabel="step", ylabel="mean output log Z")
        for a in ax:
            a.legend(fontsize=7)
            a.grid(alpha=0.3)
        page.figure(fig, f"lr {top:g}, seed 0: attention logit growth (left) and output log Z (right; dashed: the long runs).")


STUDY = Study(
    name=NAME,
    title="LR sensitivity of a small transformer with and without qk-layernorm and z-loss (Wortsman et al. 2023)",
    summary="A 2-block character transformer on stdlib text over learning rates 1e-3 to 3e-1, with and without "
            "qk-layernorm and z-loss: final loss against lr, the LR sensitivity and stable range, the max attention "
            "logit and the output log Z over training.",
    runs=runs, analyse=analyse, report=report)
