"""Plain-text tables of recorded runs (no colour, safe to pipe). Computes nothing: it formats."""

from __future__ import annotations

from typing import Sequence

from .._text import fmt, format_table
from ..store.view import RunView

__all__ = ["fmt", "format_table", "layer_table", "LAYER_COLUMNS"]

# Columns of the per-layer table, in reading order: gradient flow first, then activations.
LAYER_COLUMNS = (
    "grad_norm", "out_grad_norm", "weight_norm", "update_ratio", "update_ratio_est",
    "act_mean", "act_std", "act_zero_frac", "dead_frac", "saturated_frac", "nonfinite_frac",
)
SHORT = {
    "grad_norm": "grad_norm", "out_grad_norm": "out_grad", "weight_norm": "weight",
    "update_ratio": "upd_ratio", "update_ratio_est": "upd_est", "act_mean": "act_mean", "act_std": "act_std",
    "act_zero_frac": "zero", "dead_frac": "dead", "saturated_frac": "sat", "nonfinite_frac": "nonfin",
}


def layer_table(run: RunView, step: int | None = None, columns: Sequence[str] = LAYER_COLUMNS) -> str:
    """Per-layer table of `run` at `step` (default: the last recorded step)."""
    if len(run.steps) == 0:
        return f"run {run.name!r} ({run.status}): no step recorded yet."
    col = run.step_index(step)
    cols = [c for c in columns if c in run.stats]
    rows = []
    for info in run.layer_info:
        values = run.row(info.name, int(run.steps[col]))
        rows.append([info.name or "(root)", info.type, *(fmt(values.get(c)) for c in cols)])
    title = f"run {run.name!r} ({run.status}), step {int(run.steps[col])}, {len(run.layer_info)} layers, input side first"
    headers = ["layer", "type", *(SHORT[c] for c in cols)]
    return title + "\n" + format_table(headers, rows, right=[False, False] + [True] * len(cols))
