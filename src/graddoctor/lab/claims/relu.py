"""C3: does ReLU instead of sigmoid remove vanishing gradients? Default init vs He init, SGD and Adam."""

from __future__ import annotations

from typing import Any

from ... import theory
from ..results import Results, mean_spread
from ...train.spec import NetSpec, run_spec
from ..study import Settings
from ._common import AT_INIT, WIDTH, Claim, adam, axes, bars, decades, first_last, log10_spread, pm, sgd, verdict_of

DEPTHS = (10, 20, 50)
TRAIN_DEPTH = 20
INITS = ("default", "he")
OPTIMIZERS = ("sgd", "adam")


def runs(settings: Settings) -> list:
    out = [run_spec(f"c3/relu-{init}-depth{d}/s{k}", net=NetSpec(depth=d, width=WIDTH, init=init), train=AT_INIT,
                    seed=k, claim="C3", init=init, depth=d) for init in INITS for d in DEPTHS for k in range(settings.seeds)]
    trains = {"sgd": sgd(settings, lr=0.01), "adam": adam(settings)}
    out += [run_spec(f"c3/relu-{init}-{opt}/s{k}", net=NetSpec(depth=TRAIN_DEPTH, width=WIDTH, init=init), train=trains[opt],
                     seed=k, claim="C3", init=init, optimizer=opt) for init in INITS for opt in OPTIMIZERS
            for k in range(settings.seeds)]
    return out


def judge(results: Results, settings: Settings) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    ratio = {init: {d: log10_spread([first_last(r.view()) for r in results.select(claim="C3", init=init, depth=d)])
                    for d in DEPTHS} for init in INITS}
    acc = {f"{init}/{opt}": mean_spread(results.metric("test_accuracy", claim="C3", init=init, optimizer=opt))
           for init in INITS for opt in OPTIMIZERS}
    numbers = {"first_over_last_log10": {i: {str(d): s for d, s in v.items()} for i, v in ratio.items()},
               "test_accuracy_depth20": acc, "chi1_theory": {"default": theory.chi1("relu", 1 / 3, 1 / (3 * WIDTH)),
                                                            "he": theory.chi1("relu", 2.0, 0.0)}}
    level = {init: all(v is not None and -1 <= v <= 1 for d in DEPTHS for v in ratio[init][d]["values"])
             for init in INITS}  # None: a zero or non-finite ratio, not level
    he_level, default_level = level["he"], level["default"]
    verdict = verdict_of(supported=he_level and default_level, refuted=not he_level)
    summary = (f"ReLU at init, first/last ||dL/dh|| at depth {'/'.join(map(str, DEPTHS))}: default init "
               f"{', '.join(decades(ratio['default'][d]) for d in DEPTHS)}; He init "
               f"{', '.join(decades(ratio['he'][d]) for d in DEPTHS)}. Depth {TRAIN_DEPTH} test accuracy: default+SGD "
               f"{pm(acc['default/sgd'])}, default+Adam {pm(acc['default/adam'])}, He+SGD {pm(acc['he/sgd'])}, He+Adam {pm(acc['he/adam'])}")
    figure = {"ratio": {i: [ratio[i][d]["geomean"] for d in DEPTHS] for i in INITS},
              "acc": {k: [v["mean"], v["std"]] for k, v in acc.items()}}
    return verdict, numbers, summary, figure


def figure(data: dict[str, Any]) -> tuple[Any, str]:
    from ...reporting.figures import overlay

    fig, (a, b) = axes(2)
    overlay({f"ReLU, {i} init": (list(DEPTHS), v) for i, v in data["ratio"].items()}, xlabel="depth (Linear layers)",
            ylabel="first/last ||dL/dh|| at init", logy=True, guide=1.0, title="Gradient ratio vs depth", ax=a)
    bars(b, data["acc"], ylabel=f"test accuracy, depth {TRAIN_DEPTH}", title="Same budget, two optimizers",
         colors=["#d2461e", "#f08a5d", "#1f5fa8", "#6a9bd1"])
    return fig, ("Left: with PyTorch's default init (sigma_w^2 = 1/3, chi_1 = 1/6) a ReLU net's gradient still shrinks "
                 "by a constant factor per layer; with He init (sigma_w^2 = 2, chi_1 = 1) it stays level. Right: plain SGD "
                 "cannot train the default-init net; Adam rescales its tiny gradients and partly recovers.")


C3 = Claim(
    "C3", "Using ReLU instead of sigmoid removes vanishing gradients.",
    "supported when ReLU keeps the first/last gradient ratio within 10x of 1 at every depth and seed with both "
    "PyTorch's default and He init; qualified when it does so with He init only (ReLU removes vanishing gradients only "
    "with the right init); refuted when even He init leaves that range",
    runs, judge, figure)
