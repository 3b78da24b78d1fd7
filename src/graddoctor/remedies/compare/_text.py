"""The text table of a `Comparison`: mean ± std over seeds, verdicts, the rule and each remedy's costs."""

from __future__ import annotations

import math
from typing import Any

from ..._text import fmt, format_table
from ..catalog import get_remedy

# (metric key, column header, scale for display)
_COLUMNS = (
    ("test_accuracy", "test acc", 1.0),
    ("test_loss", "test loss", 1.0),
    ("final_loss", "train loss", 1.0),
    ("steps_to_target", "steps to target", 1.0),
    ("grad_ratio_init", "grad ratio init", 1.0),
    ("grad_ratio_end", "grad ratio end", 1.0),
    ("dead_frac", "dead", 1.0),
    ("saturated_frac", "saturated", 1.0),
    ("sec_per_step", "ms/step", 1000.0),
)


def mean_std(stat: dict[str, float], scale: float = 1.0, *, seeds: int | None = None) -> str:
    """'0.912 ± 0.013'; '-' when no seed has a finite value; '(2/3)' when only some have."""
    mean, std, n = stat["mean"], stat["std"], stat.get("n", 0)
    if n == 0 or not math.isfinite(mean):
        return "-"
    text = f"{fmt(mean * scale)} ± {fmt(std * scale)}"
    return text + (f" ({n}/{seeds})" if seeds is not None and n < seeds else "")


def render(c: Any) -> str:
    columns = [col for col in _COLUMNS if not (col[0] == "test_accuracy" and c.task != "classification")]
    headers = ["variant", "verdict", *(h for _, h, _ in columns)]
    rows = [[v.name, v.verdict or "(baseline)", *(mean_std(v.metric(k), s, seeds=c.seeds) for k, _, s in columns)]
            for v in c.variants]
    lines = [
        f"compare: {c.dataset}; {c.steps} steps, {c.seeds} seed(s) per variant, {c.optimizer} lr={fmt(c.lr)}, "
        f"batch 64 ({c.seconds:.1f} s)",
        "",
        format_table(headers, rows, right=[False, False] + [True] * len(columns)),
        "",
        "mean ± std over seeds. test acc/loss on the held-out 25%; train loss over the whole training split at the end;",
        f"steps to target: first step whose 10-step mean batch loss <= {fmt(c.loss_target)} (half a constant guess's "
        "loss), over the seeds that reached it (k/n);",
        "grad ratio: ||dL/dz|| of the first weight layer over the last (1 = level flow, << 1 vanishing, >> 1 exploding);",
        "dead/saturated: mean fraction of units over the activation layers at the last step; ms/step includes watching.",
        f"verdict rule: {c.to_dict()['verdict_rule']}.",
    ]
    costs = _costs(c)
    if costs:
        lines += ["", "what each remedy costs (catalog):", *costs]
    if c.store != ":memory:":
        lines += ["", f"runs recorded in {c.store} (one per variant and seed): graddoctor runs {c.store}"]
    return "\n".join(lines) + "\n"


def _costs(c: Any) -> list[str]:
    seen: dict[str, str] = {}
    for v in c.variants:
        for rid in v.remedies:
            remedy = get_remedy(rid)
            seen.setdefault(remedy.id, remedy.limits)
    return [f"  {rid}: {limits}" for rid, limits in seen.items()]
