"""Readers shared by the transformer studies: attention and output-logit statistics of a lab run, over its recorded steps.

The watch records `attn_logit_max`, `attn_entropy` per attention site and `logit_lse_mean`,
`logit_abs_max` on the layer that produced the logits (docs/transformers.md); these pick them out
of a run without knowing the layer names (a QK-layernorm wrapper renames the site).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..results import Record


def sites(record: Record, stat: str) -> list[str]:
    """The layers holding at least one finite value of `stat`, input side first."""
    view = record.view()
    return [n for n in view.layers if stat in view.stats and np.isfinite(view.stat(stat, n)).any()]


def series(record: Record, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values [n sites, n steps]) of `stat` at the steps where it was recorded (NaN elsewhere dropped)."""
    view = record.view()
    names = sites(record, stat)
    if not names:
        return np.array([], dtype=int), np.zeros((0, 0))
    values = np.stack([view.stat(stat, n) for n in names]).astype(float)
    keep = np.isfinite(values).any(axis=0)
    return view.steps[keep], values[:, keep]


def peak(record: Record, stat: str) -> float:
    """The largest value of `stat` over sites and recorded steps (NaN when never recorded)."""
    _, values = series(record, stat)
    return float(np.nanmax(np.abs(values))) if values.size and np.isfinite(values).any() else math.nan


def final(record: Record, stat: str, reduce: Any = np.nanmax) -> float:
    """`stat` at its last recorded step, reduced over sites (max by default)."""
    _, values = series(record, stat)
    return float(reduce(values[:, -1])) if values.size else math.nan


def first_loss(record: Record) -> float:
    """The mean of the first 5 logged minibatch losses (the loss at init)."""
    losses = [v for v in record.metrics["losses"][:5] if v is not None]
    return float(np.mean(losses)) if losses else math.nan
