"""The verdict of `graddoctor.compare`: one `Variant`'s results over seeds, and whether a remedy helps."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

MIN_EFFECT = 0.02        # verdict: the smallest change that counts (accuracy points, or 2% of the loss)
SPREADS = 2.0            # verdict: ... and more than this many pooled standard deviations


@dataclasses.dataclass(frozen=True)
class Variant:
    """One variant's results: per-seed metrics, their mean and std, and its verdict against the original."""

    name: str
    remedies: tuple[str, ...]
    per_seed: tuple[dict[str, float], ...]
    verdict: str | None = None

    def metric(self, key: str) -> dict[str, float]:
        """{mean, std, n} over the seeds where `key` is finite (std with ddof=1; 0 for one seed)."""
        values = np.array([s.get(key, math.nan) for s in self.per_seed], dtype=float)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return {"mean": math.nan, "std": math.nan, "n": 0}
        std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
        return {"mean": float(finite.mean()), "std": std, "n": int(len(finite))}


def verdict(original: dict[str, float], remedied: dict[str, float], *, higher_is_better: bool = True) -> str:
    """`helps`, `hurts` or `no_change` from two {mean, std} summaries (see `compare` for the rule).

    Example:
        >>> verdict({"mean": 0.10, "std": 0.01}, {"mean": 0.90, "std": 0.02})
        'helps'
    """
    a, b = original["mean"], remedied["mean"]
    if not math.isfinite(b):
        return "no_change" if not math.isfinite(a) else "hurts"
    if not math.isfinite(a):
        return "helps"
    gain = (b - a) if higher_is_better else (a - b)
    pooled = math.sqrt((_finite(original["std"]) ** 2 + _finite(remedied["std"]) ** 2) / 2)
    floor = MIN_EFFECT if higher_is_better else MIN_EFFECT * abs(a)
    threshold = max(SPREADS * pooled, floor)
    if gain > threshold:
        return "helps"
    if -gain > threshold:
        return "hurts"
    return "no_change"


def verdict_rule(task: str) -> str:
    """The verdict rule in words, as printed under the table and stored in the JSON."""
    if task == "classification":
        return ("helps: mean test accuracy above the original's by more than 2 pooled std over seeds and by at least "
                "0.02; hurts: below by the same margin (or non-finite); else no_change")
    return ("helps: mean test loss below the original's by more than 2 pooled std over seeds and by at least 2% of "
            "it; hurts: above by the same margin (or non-finite); else no_change")


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0

