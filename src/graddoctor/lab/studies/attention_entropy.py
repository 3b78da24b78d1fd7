"""Study `attention-entropy`: attention entropy collapses at high learning rates, with the loss's instability (Zhai et al. 2023).

Paper: S. Zhai, T. Likhomanenko, E. Littwin, D. Busbridge, J. Ramapuram, Y. Zhang, J. Gu,
J. Susskind, "Stabilizing Transformer Training by Preventing Attention Entropy Collapse", ICML 2023
(arXiv:2303.06296). Sec. 3 and Figs. 1-2: in unstable runs the attention entropy of some layers
falls to near 0 (the attention puts all its weight on one key) and the loss becomes unstable or
diverges; raising the learning rate makes it happen. Sec. 4: their remedy sigma-Reparam,
W_hat = (gamma / sigma(W)) W on every linear layer (sigma by one power-iteration step per training
step, gamma learnable, init 1), keeps the entropy up; so does qk-layernorm (Dehghani et al. 2023,
Wortsman et al. 2023).

Here: the lab's pre-LN causal character transformer (4 blocks, width 64, 4 heads, context 32) on
`chars-32` (Python stdlib sources), Adam with a linear warm-up over the first 10 % of the steps,
at x1, x2 and x4 a base learning rate near the top of the stable range of the lr-sensitivity
study, without remedy, with qk-layernorm and with sigma-Reparam on every Linear of the model
(attention q/k/v and output, MLP, head; `remedies/_sigma_reparam.py`). The watch
records `attn_entropy` per layer every 5 steps. Collapse: a layer's entropy below 10 % of its
value at init (the `attention_entropy_collapse` rule's threshold). Loss instability: the first
step where the loss (mean of 10 steps) rises 0.3 nats/char above its best so far.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...train.sequence import SeqNetSpec
from ...train.spec import RunSpec, TrainSpec, run_spec
from ..results import Record, Results, fmt_spread, mean_spread
from ..study import Settings, Study
from ..verdicts import claim
from ._transformer_common import series

NAME = "attention-entropy"
PAPER = "Zhai et al. 2023, Stabilizing Transformer Training by Preventing Attention Entropy Collapse (ICML; arXiv:2303.06296)"
DATA = "chars-32"
COLLAPSE = 0.1     # fraction of a layer's entropy at init
RISE = 0.3         # nats/char above the best smoothed loss so far
VARIANTS = {  # key: (label, SeqNetSpec fields)
    "base": ("no remedy", {}),
    "qk": ("qk-layernorm", {"qk_norm": True}),
    "sr": ("sigma-Reparam", {"sigma_reparam": True}),
}
REMEDIES = ("qk", "sr")


@dataclasses.dataclass(frozen=True)
class Config:
    base_lr: float = 1e-2
    multipliers: tuple[int, ...] = (1, 2, 4)
    depth: int = 4
    width: int = 64
    steps: int = 200


FULL = Config()
QUICK = Config(base_lr=0.05, multipliers=(1, 4), depth=2, width=32, steps=40)


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    cfg = config(settings)
    specs = []
    for mult in sorted(cfg.multipliers, reverse=True):  # the highest first: the claims lean on it most
        for key, (_, fields) in VARIANTS.items():
            train = TrainSpec(optimizer="adam", lr=cfg.base_lr * mult, batch=32, steps=cfg.steps, warmup=cfg.steps // 10,
                              every=5, attention_every=5)
            net = SeqNetSpec(kind="transformer", depth=cfg.depth, width=cfg.width, heads=4, norm_first=True, **fields)
            specs += [run_spec(f"{key}/x{mult}/s{seed}", net=net, train=train, seed=seed, data=DATA, variant=key, mult=mult)
                      for seed in range(settings.seeds)]
    return specs


def collapse_step(record: Record) -> tuple[int | None, list[float], list[int], np.ndarray]:
    """(first step where some layer's entropy < COLLAPSE x its init value, min entropy ratio per layer, steps, entropies)."""
    steps, values = series(record, "attn_entropy")
    ratio = values / values[:, :1]
    below = np.flatnonzero(np.nanmin(ratio, axis=0) < COLLAPSE)
    return (int(steps[below[0]]) if below.size else None), np.nanmin(ratio, axis=1).tolist(), steps.tolist(), values


def instability_step(losses: list[float | None], window: int = 10) -> int | None:
    """First step where the `window`-step mean loss is RISE above its best so far (or the loss is not finite)."""
    x = np.array([np.inf if v is None else v for v in losses], dtype=float)
    if not np.all(np.isfinite(x)):
        return int(np.flatnonzero(~np.isfinite(x))[0])
    smooth = np.convolve(x, np.ones(window) / window, mode="valid")
    best = np.minimum.accumulate(smooth)
    up = np.flatnonzero(smooth > best + RISE)
    return int(up[0]) + window - 1 if up.size else None


def _point(results: Results, key: str, mult: int) -> dict[str, Any]:
    records = results.select(variant=key, mult=mult)
    col = [collapse_step(r) for r in records]
    inst = [instability_step(r.metrics["losses"]) for r in records]
    return {"variant": key, "mult": mult, "test_loss": mean_spread(results.metric("test_loss", variant=key, mult=mult)),
            "collapsed": sum(c[0] is not None for c in col), "collapse_steps": [c[0] for c in col], "unstable": sum(i is not None for i in inst),
            "instability_steps": inst, "min_entropy_ratio": mean_spread([min(c[1]) for c in col]),
            "entropy_steps": col[0][2], "entropy": col[0][3].tolist(), "n": len(records)}


def _claims(points: dict[tuple[str, int], dict[str, Any]], cfg: Config) -> list[dict[str, Any]]:
    lo, hi = min(cfg.multipliers), max(cfg.multipliers)
    b_lo, b_hi = points["base", lo], points["base", hi]
    e1 = ("supported" if b_hi["collapsed"] == b_hi["n"] and b_lo["collapsed"] == 0
          else "qualified" if b_hi["collapsed"] > b_lo["collapsed"] or b_hi["min_entropy_ratio"]["mean"] < b_lo["min_entropy_ratio"]["mean"]
          else "refuted")
    pairs = [(c, i) for p in points.values() if p["variant"] == "base" for c, i in zip(p["collapse_steps"], p["instability_steps"])
             if c is not None or i is not None]
    before = [c is not None and (i is None or c <= i) for c, i in pairs]
    both = [c is not None and i is not None and c <= i for c, i in pairs]
    e2 = ("supported" if both and all(both) else "qualified" if before and all(before) else
          "refuted" if pairs else "qualified")
    return [
        claim("E1", "At a high learning rate the attention entropy collapses; at the stable one it does not", e1,
              f"a run collapses when some layer's attn_entropy falls below {COLLAPSE:g} x its init value: supported when every "
              f"seed collapses at x{hi} and none at x{lo}; qualified when x{hi} collapses more often or further; else refuted",
              {"collapsed_low": b_lo["collapsed"], "collapsed_high": b_hi["collapsed"]},
              f"collapsed seeds: x{lo} {b_lo['collapsed']}/{b_lo['n']}, x{hi} {b_hi['collapsed']}/{b_hi['n']}; min entropy / init "
              f"x{lo} {fmt_spread(b_lo['min_entropy_ratio'], 2)}, x{hi} {fmt_spread(b_hi['min_entropy_ratio'], 2)}"),
        claim("E2", "The entropy collapse comes before (or with) the loss's instability", e2,
              f"over the runs without remedy that collapse or become unstable (loss {RISE} nats above its best, 10-step mean): "
              "supported when every one collapses at or before its instability step and is unstable; qualified when every "
              "collapse comes first but some collapsed run stays stable (or none collapses nor becomes unstable); else refuted",
              {"pairs": pairs}, "collapse step / instability step: " + (", ".join(f"{c}/{i}" for c, i in pairs) or "none")),
    ] + [_remedy_claim(cid, points[key, hi], b_hi, key, hi) for cid, key in (("E3", "qk"), ("E4", "sr"))]


def _remedy_claim(cid: str, r_hi: dict[str, Any], b_hi: dict[str, Any], key: str, hi: int) -> dict[str, Any]:
    label = VARIANTS[key][0]
    lower = r_hi["test_loss"]["mean"] < b_hi["test_loss"]["mean"]
    verdict = ("supported" if r_hi["collapsed"] == 0 and lower
               else "qualified" if r_hi["collapsed"] < b_hi["collapsed"] or lower else "refuted")
    return claim(cid, f"{label} keeps the entropy from collapsing and trains better at the high learning rate", verdict,
                 f"at x{hi}: supported when no {label} seed collapses and its test loss is lower than without remedy; "
                 "qualified when one holds (or it collapses in fewer seeds); else refuted",
                 {"collapsed_remedy": r_hi["collapsed"], "loss_remedy": r_hi["test_loss"]["mean"],
                  "loss_base": b_hi["test_loss"]["mean"]},
                 f"x{hi}: collapsed {b_hi['collapsed']}/{b_hi['n']} -> {r_hi['collapsed']}/{r_hi['n']}, test loss "
                 f"{fmt_spread(b_hi['test_loss'])} -> {fmt_spread(r_hi['test_loss'])}")


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """Per (remedy, lr multiplier): collapse and instability steps, the lowest entropy ratio, the test loss."""
    cfg = config(settings)
    points = {(k, m): _point(results, k, m) for m in cfg.multipliers for k in VARIANTS}
    rows = [[f"x{m} ({cfg.base_lr * m:g})", VARIANTS[k][0], fmt_spread(p["test_loss"]), fmt_spread(p["min_entropy_ratio"], 2),
             f"{p['collapsed']}/{p['n']}", " ".join(str(s) for s in p["collapse_steps"]),
             " ".join(str(s) for s in p["instability_steps"])] for (k, m), p in points.items()]
    return {"paper": PAPER, "config": dataclasses.asdict(cfg), "points": list(points.values()),
            "claims": _claims(points, cfg),
            "table": {"header": ["lr", "remedy", "test loss", "min entropy / init", "collapsed", "collapse step",
                                 "instability step"], "rows": rows},
            "notes": ["entropy per layer recorded every 5 steps; 'None': never", f"paper: {PAPER}"]}


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The table and, per lr multiplier, the per-layer entropy and the loss over training (seed 0)."""
    from ._paper_common import axes

    t = analysis["table"]
    cfg = analysis["config"]
    with page.section("Attention entropy collapse and the loss", anchor="attention-entropy"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(t["header"], t["rows"])
        fig, ax = axes(ncols=len(cfg["multipliers"]))
        ax = np.atleast_1d(ax)
        for a, mult in zip(ax, cfg["multipliers"]):
            for p in (p for p in analysis["points"] if p["mult"] == mult):
                ent = np.asarray(p["entropy"])
                for i, row in enumerate(ent):
                    a.plot(p["entropy_steps"], row, ls={"base": "-", "qk": "--"}.get(p["variant"], ":"),
                           label=f"{VARIANTS[p['variant']][0]}, layer {i}" if mult == cfg["multipliers"][0] else None)
            a.set(xlabel="step", ylabel="attention entropy (nats)", title=f"lr x{mult}")
            a.grid(alpha=0.3)
        ax[0].legend(fontsize=6)
        page.figure(fig, "Attention entropy per layer over training, seed 0; solid: no remedy, dashed: qk-layernorm, "
                         "dotted: sigma-Reparam.")
        fig, ax = axes()
        for r in results.records:
            if r.spec.seed == 0:
                x = np.array([np.nan if v is None else v for v in r.metrics["losses"]])
                ax.plot(x, label=f"{VARIANTS[r.spec.tag('variant')][0]} x{r.spec.tag('mult')}", lw=0.8)
        ax.set(xlabel="step", ylabel="train loss (minibatch)")
        ax.legend(fontsize=7)
        page.figure(fig, "Training loss, seed 0.")


STUDY = Study(
    name=NAME,
    title="Attention entropy collapse at high learning rates (Zhai et al. 2023)",
    summary="A 4-block character transformer at x1, x2, x4 a base learning rate, without remedy, with qk-layernorm and with "
            "sigma-Reparam: attention entropy per layer over training, whether it collapses, and whether the collapse comes before the loss's "
            "instability.",
    runs=runs, analyse=analyse, report=report)
