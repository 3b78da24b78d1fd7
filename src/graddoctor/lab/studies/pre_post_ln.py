"""Study `pre-post-ln`: where the LayerNorm sits decides the gradient at init and the need for warm-up (Xiong et al. 2020).

Paper: R. Xiong, Y. Yang, D. He, K. Zheng, S. Zheng, C. Xing, H. Zhang, Y. Lan, L. Wang, T.-Y. Liu,
"On Layer Normalization in the Transformer Architecture", ICML 2020 (arXiv:2002.04745). Theorem 1:
at initialization the gradient of the last layer's FFN weights W^{2,L} is O(d sqrt(ln d)) for the
Post-LN transformer, independent of the depth L, and O(d sqrt(ln d / L)) for the Pre-LN one (its
final LayerNorm divides by the norm of a sum of L residual branches); Fig. 3: Post-LN's gradient
norm grows toward the output layer, Pre-LN's stays the same across layers. Sec. 3.1 and Fig. 2:
without the learning-rate warm-up, Post-LN trains badly (Adam, lr 5e-4 or 1e-3 on IWSLT14 De-En:
BLEU far below the warmed-up runs), and Pre-LN trains without warm-up.

Here: the lab's causal character transformer (graddoctor.train.sequence: width 64, 4 heads, GELU
MLP of 256, no dropout) on `chars-32` (Python stdlib sources). At init: depths 6 to 48, one step
of batch 32 (from the first 256 training windows); the recorded `grad_norm` (weight and bias together) of every block's `fc2` (the
FFN's output matrix). Training: 6 blocks, Adam at a fixed lr without warm-up (post-LN, pre-LN), and
post-LN with a linear warm-up, the same budget.
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

NAME = "pre-post-ln"
PAPER = "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture (ICML; arXiv:2002.04745)"
DATA = "chars-32"
LN = {"post": False, "pre": True}
TRAINED = {  # key: (label, norm_first, warm-up fraction of the steps)
    "post": ("Post-LN, no warm-up", False, 0.0),
    "post-warmup": ("Post-LN, warm-up", False, 0.25),
    "pre": ("Pre-LN, no warm-up", True, 0.0),
}


@dataclasses.dataclass(frozen=True)
class Config:
    depths: tuple[int, ...] = (6, 12, 24, 48)
    width: int = 64
    train_depth: int = 6
    lr: float = 1e-2
    steps: int = 150
    train_seeds: int = 1          # seeds of the trainings (the measurements at init take --seeds)


FULL = Config()
QUICK = Config(depths=(4, 16), width=32, train_depth=3, steps=40)


def config(settings: Settings) -> Config:
    return QUICK if settings.quick else FULL


def runs(settings: Settings) -> list[RunSpec]:
    cfg = config(settings)
    once = TrainSpec(optimizer="adam", lr=1e-3, batch=32, steps=1)
    specs = [run_spec(f"init/{ln}/L={d}/s{seed}", seed=seed, train=once, data=f"{DATA}-n256", part="init", ln=ln, depth=d,
                      net=SeqNetSpec(kind="transformer", depth=d, width=cfg.width, heads=4, norm_first=pre))
             for d in cfg.depths for ln, pre in LN.items() for seed in range(settings.seeds)]
    for key, (_, pre, warm) in TRAINED.items():
        train = TrainSpec(optimizer="adam", lr=cfg.lr, batch=32, steps=cfg.steps, warmup=int(warm * cfg.steps), every=10)
        specs += [run_spec(f"train/{key}/s{seed}", seed=seed, train=train, data=DATA, part="train", variant=key,
                           net=SeqNetSpec(kind="transformer", depth=cfg.train_depth, width=cfg.width, heads=4,
                                          norm_first=pre))
                  for seed in range(min(settings.seeds, cfg.train_seeds))]
    return specs


def ffn_grads(record: Record) -> list[float]:
    """grad_norm at step 0 of every block's FFN output layer (`blocks.i.fc2`), input side first."""
    view = record.view()
    names = sorted((n for n in view.layers if n.startswith("blocks.") and n.endswith(".fc2")),
                   key=lambda n: int(n.split(".")[1]))
    return [float(view.stat("grad_norm", n)[0]) for n in names]


def _slope(depths: list[int], values: list[float]) -> float:
    """The exponent a of values ~ depth^a (least squares in log-log)."""
    return float(np.polyfit(np.log(depths), np.log(values), 1)[0])


def _init_point(results: Results, ln: str, depth: int) -> dict[str, Any]:
    grads = [ffn_grads(r) for r in results.select(part="init", ln=ln, depth=depth)]
    return {"ln": ln, "depth": depth, "last": mean_spread([g[-1] for g in grads]), "first": mean_spread([g[0] for g in grads]),
            "last_over_first": mean_spread([g[-1] / g[0] for g in grads]), "profile": grads[0]}


def _trained(results: Results, key: str) -> dict[str, Any]:
    records = results.select(part="train", variant=key)
    losses = np.array([[np.nan if v is None else v for v in r.metrics["losses"]] for r in records], dtype=float)
    return {"variant": key, "label": TRAINED[key][0], "final_loss": mean_spread(results.metric("final_loss", part="train", variant=key)),
            "test_loss": mean_spread(results.metric("test_loss", part="train", variant=key)),
            "early_max_loss": mean_spread(np.nanmax(losses[:, : max(1, losses.shape[1] // 4)], axis=1)),
            "loss_curve": np.nanmean(losses, axis=0).tolist()}


def _scaling_claims(points: list[dict[str, Any]], cfg: Config) -> tuple[list[dict[str, Any]], dict[str, float]]:
    depths = list(cfg.depths)
    slope = {ln: _slope(depths, [next(p["last"]["mean"] for p in points if p["ln"] == ln and p["depth"] == d) for d in depths])
             for ln in LN}
    post_v = "supported" if abs(slope["post"]) <= 0.15 else "qualified" if abs(slope["post"]) <= 0.3 else "refuted"
    pre_v = ("supported" if -0.65 <= slope["pre"] <= -0.35 else "qualified" if slope["pre"] < -0.15 else "refuted")
    deepest = max(depths)
    ratio = {ln: next(p["last_over_first"]["mean"] for p in points if p["ln"] == ln and p["depth"] == deepest) for ln in LN}
    shape_v = ("supported" if ratio["post"] >= 2 and 0.5 <= ratio["pre"] <= 2
               else "qualified" if ratio["post"] > ratio["pre"] else "refuted")
    fmt = lambda ln: ", ".join(f"L={p['depth']}: {p['last']['mean']:.3g}" for p in points if p["ln"] == ln)  # noqa: E731
    claims = [
        claim("X1", "Post-LN: the gradient of the last layer's FFN weights at init does not shrink with depth", post_v,
              "exponent a of grad_norm(fc2 of the last block) ~ L^a over the depths: supported when |a| <= 0.15, "
              "qualified when |a| <= 0.3, else refuted", {"exponent": slope["post"]},
              f"exponent {slope['post']:.3f} ({fmt('post')})"),
        claim("X2", "Pre-LN: that gradient shrinks like 1/sqrt(L)", pre_v,
              "the same exponent for Pre-LN: supported when -0.65 <= a <= -0.35, qualified when a < -0.15, else refuted",
              {"exponent": slope["pre"]}, f"exponent {slope['pre']:.3f} ({fmt('pre')})"),
        claim("X3", "At init Post-LN's FFN gradient grows toward the output layer; Pre-LN's is the same across layers", shape_v,
              f"at L={deepest}, last block's over first block's fc2 grad_norm: supported when Post-LN's >= 2 and "
              "Pre-LN's within [0.5, 2]; qualified when Post-LN's is larger; else refuted", ratio,
              f"last/first at L={deepest}: Post-LN {ratio['post']:.2f}, Pre-LN {ratio['pre']:.2f}"),
    ]
    return claims, slope


def _warmup_claim(trained: dict[str, dict[str, Any]], cfg: Config) -> dict[str, Any]:
    post, warm, pre = (trained[k]["test_loss"]["mean"] for k in ("post", "post-warmup", "pre"))
    margin = 0.1  # nats per character
    fails = post > pre + margin and post > warm + margin
    verdict = "supported" if fails else "qualified" if post > min(pre, warm) + 0.02 else "refuted"
    return claim("X4", "Without warm-up at a fixed learning rate Post-LN trains worse; Pre-LN, or Post-LN with warm-up, trains",
                 verdict, f"test loss after {cfg.steps} Adam steps at lr {cfg.lr:g}, depth {cfg.train_depth}: supported when "
                 f"Post-LN without warm-up is > {margin} nats/char above both Pre-LN and warmed-up Post-LN; qualified when it is "
                 "above the better of them by > 0.02; else refuted", {"post": post, "post_warmup": warm, "pre": pre},
                 f"test loss: Post-LN {fmt_spread(trained['post']['test_loss'])}, warm-up "
                 f"{fmt_spread(trained['post-warmup']['test_loss'])}, Pre-LN {fmt_spread(trained['pre']['test_loss'])}")


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    """FFN gradient norms at init per (LN placement, depth), their depth exponent, and the three trainings."""
    cfg = config(settings)
    points = [_init_point(results, ln, d) for d in cfg.depths for ln in LN]
    claims, slope = _scaling_claims(points, cfg)
    trained = {k: _trained(results, k) for k in TRAINED}
    claims.append(_warmup_claim(trained, cfg))
    rows = [[p["depth"], f"{p['ln']}-LN", fmt_spread(p["last"]), fmt_spread(p["first"]), fmt_spread(p["last_over_first"], 2),
             "const in L, grows toward output" if p["ln"] == "post" else "~ 1/sqrt(L), flat over layers"] for p in points]
    return {"paper": PAPER, "config": dataclasses.asdict(cfg), "points": points, "exponents": slope, "trained": trained,
            "claims": claims,
            "table": {"header": ["L", "LN", "grad_norm last fc2", "first fc2", "last/first", "paper (Thm 1, Fig. 3)"],
                      "rows": rows},
            "notes": [f"depth exponents of the last block's fc2 grad_norm: post {slope['post']:.3f} (paper 0), "
                      f"pre {slope['pre']:.3f} (paper -0.5)", f"paper: {PAPER}"]}


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    """The init table, the per-block profile at the deepest, the gradient against depth, and the loss curves."""
    from ._paper_common import axes, lines

    t = analysis["table"]
    cfg = analysis["config"]
    with page.section("Post-LN vs Pre-LN: gradients at init and warm-up", anchor="pre-post-ln"):
        page.paragraph(__doc__.split("\n\n", 1)[1])
        page.table(t["header"], t["rows"], text_columns=(5,))
        fig, ax = axes(ncols=2)
        deepest = max(cfg["depths"])
        for ln in LN:
            p = next(p for p in analysis["points"] if p["ln"] == ln and p["depth"] == deepest)
            ax[0].semilogy(range(1, len(p["profile"]) + 1), p["profile"], "o-", label=f"{ln}-LN")
        ax[0].set_xlabel("block")
        ax[0].set_ylabel("grad_norm of fc2 at init")
        ax[0].legend()
        ax[0].set_title(f"L = {deepest}, seed 0")
        series = {f"{ln}-LN": [next(p["last"]["mean"] for p in analysis["points"] if p["ln"] == ln and p["depth"] == d)
                               for d in cfg["depths"]] for ln in LN}
        lines(ax[1], cfg["depths"], series, xlabel="depth L", ylabel="last block's fc2 grad_norm", logy=True)
        ax[1].set_xscale("log")
        page.figure(fig, "Left: per-block FFN gradient at init (Xiong et al. Fig. 3). Right: the last block's against depth "
                         "(Theorem 1: Post-LN flat, Pre-LN ~ 1/sqrt(L)).")
        fig, ax = axes()
        for tr in analysis["trained"].values():
            ax.plot(tr["loss_curve"], label=tr["label"])
        ax.set_xlabel("step")
        ax.set_ylabel("train loss (minibatch, mean over seeds)")
        ax.legend()
        page.figure(fig, f"Depth {cfg['train_depth']}, Adam lr {cfg['lr']:g}: with and without warm-up.")


STUDY = Study(
    name=NAME,
    title="Post-LN vs Pre-LN transformers: gradients at init and warm-up (Xiong et al. 2020)",
    summary="Character transformers of depth 6-48 at init, Post-LN against Pre-LN: the FFN weights' gradient norm per "
            "block and the last block's against depth (Theorem 1: flat vs 1/sqrt(L)); and 6 blocks trained with Adam at a "
            "fixed learning rate with and without warm-up.",
    runs=runs, analyse=analyse, report=report)
