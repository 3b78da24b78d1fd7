"""Evidence: the flat mappings of numbers each finding carries, built from a run and a rule's reading.

Pure functions. Keys are stable (they appear in the Findings JSON); per-layer values use
`<stat>@<layer>` keys so the mapping stays flat.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import Stat, update_stat
from ..store.view import RunView
from .families import SATURATING, activation_layers, family
from .profile import DepthProfile, Window, forward_factor, largest_step, loss_series, nonfinite_columns, window_values
from .thresholds import Thresholds

MAX_PER_LAYER = 12  # per-layer entries in one finding's evidence: enough to read, short enough to print


def depth_evidence(run: RunView, p: DepthProfile, other_ratio: float) -> dict[str, Any]:
    """Numbers behind a vanishing/exploding finding read across depth."""
    names = [run.layer_info[i].name for i in p.layers]
    vanishing = p.ratio < 1
    k, step = largest_step(p, vanishing)
    other = "end" if p.window.label == "start" else "start"
    ev: dict[str, Any] = {
        "first_last_ratio": p.ratio,
        "factor_per_layer": p.factor,
        "fit_r2": p.r2,
        "n_weight_layers": len(p.layers),
        "input_layer": names[0],
        "output_layer": names[-1],
        "input_out_grad_norm": float(p.grads[0]),
        "output_out_grad_norm": float(p.grads[-1]),
        "window": p.window.label,
        f"first_last_ratio_at_{other}": other_ratio,
        "largest_step_factor": step,
        "largest_step_between": f"{names[k]} <- {names[k + 1]}",
        "forward_factor_per_layer": forward_factor(run, p),
    }
    updates = window_values(run.stat_matrix(update_stat(run.stats), copy=False), p.window.cols)[[p.layers[0], p.layers[-1]]]
    if np.all(np.isfinite(updates)) and updates[1] > 0:
        ev["update_ratio_input_over_output"] = float(updates[0] / updates[1])
    sat = saturating_median(run, p.window)
    if math.isfinite(sat):
        ev["saturated_frac_median"] = sat
    dead = all_dead_layer(run, p)
    if dead is not None:
        ev["all_dead_layer"] = dead
    zero = zero_init_layer(run, p)
    if zero is not None:
        ev["zero_init_layer"] = zero
    return ev


def zero_init_layer(run: RunView, p: DepthProfile) -> str | None:
    """The output-most weight layer of the profile whose weights were all zero at the first recorded step."""
    weights = run.stat_matrix(Stat.WEIGHT_NORM.value, copy=False)[:, 0]
    zero = [i for i in p.layers[1:] if weights[i] == 0]
    return run.layer_info[zero[-1]].name if zero else None


def saturating_median(run: RunView, window: Window) -> float:
    """Median saturated_frac over the saturating activation layers in `window` (NaN if none)."""
    idx = [i for i in activation_layers(run) if family(run.layer_info[i].type) in SATURATING]
    if not idx:
        return math.nan
    values = window_values(run.stat_matrix(Stat.SATURATED_FRAC.value, copy=False), window.cols)[idx]
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def all_dead_layer(run: RunView, p: DepthProfile) -> str | None:
    """The input-most activation layer, above the first weight layer, whose units are all dead."""
    dead = window_values(run.stat_matrix(Stat.DEAD_FRAC.value, copy=False), p.window.cols, how="min")
    for i in activation_layers(run):
        if i > p.layers[0] and dead[i] >= 1.0:
            return run.layer_info[i].name
    return None


def spike_evidence(
    run: RunView, total: np.ndarray, cols: np.ndarray, spikes: list[tuple[float, int]], growth: float
) -> dict[str, Any]:
    """Numbers behind a gradient-spike finding (total gradient norm over time)."""
    ev: dict[str, Any] = {"n_spikes": len(spikes), "n_steps": int(cols.size)}
    if math.isfinite(growth):  # NaN: the run is too short to compare a first and a last window
        ev["growth_start_to_end"] = growth
    if spikes:
        ratio, k = max(spikes)
        first_ratio, first_k = spikes[0]
        ev.update({
            "first_spike_step": int(run.steps[cols[first_k]]),
            "first_spike_ratio": first_ratio,
            "max_spike_ratio": ratio,
            "max_spike_step": int(run.steps[cols[k]]),
            "grad_norm_at_max_spike": float(total[cols[k]]),
            "grad_norm_median_before": float(total[cols[k]] / ratio),
        })
    return ev


def dead_evidence(
    run: RunView, flagged: list[int], now: np.ndarray, before: np.ndarray, late: Window
) -> dict[str, Any]:
    """Numbers behind a dead-units finding: the window minimum of dead_frac per flagged layer."""
    worst = max(flagged, key=lambda i: now[i])
    ev: dict[str, Any] = {
        "n_layers": len(flagged),
        "worst_layer": run.layer_info[worst].name,
        "dead_frac_max": float(now[worst]),
        "dead_frac_at_start": float(before[worst]),
        "window_steps": int(late.cols.size),
    }
    for i in flagged[:MAX_PER_LAYER]:
        ev[f"dead_frac@{run.layer_info[i].name}"] = float(now[i])
    ev.update(preactivation(run, worst, late))
    return ev


def saturation_evidence(
    run: RunView, flagged: list[int], start: np.ndarray, now: np.ndarray, loss_change: float | None
) -> dict[str, Any]:
    """Numbers behind a saturated-units finding (medians over the first and the last window)."""
    worst = max(flagged, key=lambda i: np.fmax(start[i], now[i]))
    ev: dict[str, Any] = {
        "n_layers": len(flagged),
        "worst_layer": run.layer_info[worst].name,
        "saturated_frac_max": float(np.fmax(start[worst], now[worst])),
        "saturated_frac_at_start": float(np.nanmedian(start[flagged])) if np.isfinite(start[flagged]).any() else math.nan,
        "saturated_frac_at_end": float(np.nanmedian(now[flagged])),
    }
    for i in flagged[:MAX_PER_LAYER]:
        ev[f"saturated_frac@{run.layer_info[i].name}"] = float(np.fmax(start[i], now[i]))
    if loss_change is not None:
        ev["loss_relative_change"] = loss_change
    cols = np.flatnonzero(run.recorded(Stat.SATURATED_FRAC.value, copy=False).any(axis=0))
    ev.update(preactivation(run, worst, Window("start", cols[:5])))
    return ev


def preactivation(run: RunView, act: int, window: Window) -> dict[str, Any]:
    """Mean and std of the output of the layer that feeds activation `act` (its pre-activation)."""
    prev = next((i for i in range(act - 1, -1, -1) if run.layer_info[i].kind == "param"), None)
    if prev is None:
        return {}
    mean = window_values(run.stat_matrix(Stat.ACT_MEAN.value, copy=False), window.cols)[prev]
    std = window_values(run.stat_matrix(Stat.ACT_STD.value, copy=False), window.cols)[prev]
    if not (np.isfinite(mean) and np.isfinite(std)):
        return {}
    return {"preact_layer": run.layer_info[prev].name, "preact_mean": float(mean), "preact_std": float(std)}


def stalled_evidence(
    run: RunView, stalled: list[int], known: list[int], updates: np.ndarray, reference: float, late: Window
) -> dict[str, Any]:
    """Numbers behind a stalled-updates finding: update ratios and gradient norms, relative to the median layer."""
    grads = window_values(run.stat_matrix(Stat.GRAD_NORM.value, copy=False), late.cols)
    ref_grad = float(np.nanmedian(grads[known]))
    stalled_grads = grads[stalled]
    ev: dict[str, Any] = {
        "n_layers": len(stalled),
        "median_update_ratio": reference,
        "min_update_ratio": float(np.min(updates[stalled])),
        "max_update_ratio": float(np.max(updates[stalled])),
        "zero_gradient_layers": int(np.sum(stalled_grads == 0)),
        "grad_norm_relative": float(np.nanmedian(stalled_grads) / ref_grad) if ref_grad > 0 else math.nan,
        "window_steps": int(late.cols.size),
    }
    for i in stalled[:MAX_PER_LAYER]:
        ev[f"update_ratio@{run.layer_info[i].name}"] = float(updates[i])
    return ev


def nonfinite_evidence(run: RunView, step: int, layer: str, stat: str, total: np.ndarray, t: Thresholds) -> dict[str, Any]:
    """Where NaN/Inf first appeared, how often, and what the total gradient norm did before."""
    bad_cols = nonfinite_columns(run).tolist()
    first_col = int(np.searchsorted(run.steps, step))
    before = [j for j in range(first_col) if math.isfinite(total[j])]
    ev: dict[str, Any] = {
        "first_step": step,
        "first_layer": layer,
        "first_stat": stat,
        "n_nonfinite_steps": len(bad_cols),
        "last_nonfinite_step": int(run.steps[bad_cols[-1]]) if bad_cols else step,
        "n_recorded_steps": len(run.steps),
        "steps_before": len(before),
    }
    if before:
        start = float(np.median(total[before[:t.early_steps]]))
        ev["grad_norm_at_start"] = start
        ev["grad_norm_before"] = float(total[before[-1]])
        ev["grad_norm_growth_before"] = float(total[before[-1]] / start) if start > 0 else math.inf
    loss = loss_series(run)
    if loss is not None and before and math.isfinite(loss[before[-1]]):
        ev["loss_before"] = float(loss[before[-1]])
    return ev
