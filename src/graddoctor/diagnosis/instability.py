"""Rules for training instability (docs/transformers.md), each judged against the run's own start.

large_updates: the median weight layer's update_ratio far above ~1e-3, or far above its own early
median. activation_growth: a layer's act_std (or the output logits' max |logit|) orders of magnitude
above its first recorded value. attention_logit_growth / attention_entropy_collapse: an attention
site's max logit past where softmax saturates, its entropy collapsing. loss_spike: the logged loss
against its running median, on the scale of the first loss. Pure functions of a `RunView`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import Role, Stat, update_stat
from ..store.view import RunView
from . import instability_advice as advice
from .families import weight_layers
from .findings import Finding, Kind, Severity
from .profile import estimated, finite_median, layer_names, loss_series, running_medians
from .thresholds import Thresholds


def _steps(run: RunView, cols) -> tuple[int, int]:
    return int(run.steps[cols[0]]), int(run.steps[cols[-1]])


def _first_values(m: np.ndarray) -> np.ndarray:
    """Per row: the first finite value (NaN where none)."""
    out = np.full(m.shape[0], np.nan)
    for i, row in enumerate(m):
        finite = np.flatnonzero(np.isfinite(row))
        if finite.size:
            out[i] = row[finite[0]]
    return out


def _severity(hits: int, worst: float, error: float, t: Thresholds) -> Severity:
    if hits < t.instability_min_steps:
        return Severity.INFO
    return Severity.ERROR if worst >= error else Severity.WARNING


def loss_diverged_step(run: RunView, t: Thresholds) -> int | None:
    """The first step whose loss is non-finite or spikes (see loss_spike), if any."""
    spikes = _loss_spikes(run, t)
    return spikes[0][0] if spikes else None


def large_updates(run: RunView, t: Thresholds) -> list[Finding]:
    idx = [i for i in weight_layers(run) if run.layer_info[i].role is not Role.EMBEDDING and run.layer_info[i].n_params]
    stat = update_stat(run.stats)  # the exact update_ratio, else its estimate
    u = run.stat_matrix(stat, copy=False)[idx] if idx else np.zeros((0, len(run.steps)))
    if u.size == 0:
        return []
    with np.errstate(all="ignore"):
        median = finite_median(u)  # per step, over the layers
    finite = np.flatnonzero(np.isfinite(median))
    if finite.size == 0:
        return []
    early = float(np.median(median[finite[:t.early_steps]]))
    absolute = median >= t.large_update_warning
    relative = (median >= t.large_update_relative * early) & (median >= 1e-2) if early > 0 else np.zeros_like(absolute)
    cols = np.flatnonzero(absolute | relative)
    if cols.size == 0:
        return []
    worst_col = int(cols[np.argmax(median[cols])])
    worst_layers = [idx[k] for k in np.argsort(-np.nan_to_num(u[:, worst_col], nan=-1))[:5]]
    ev = {"median_update_ratio_max": float(median[worst_col]), "at_step": int(run.steps[worst_col]),
          "median_update_ratio_early": early, "n_steps_flagged": int(cols.size),
          "first_flagged_step": int(run.steps[cols[0]]), "rule_of_thumb": 1e-3, **estimated(stat)}
    diverged = loss_diverged_step(run, t)
    if diverged is not None:
        ev["loss_spike_step"] = diverged
    cause, remedies = advice.large_updates(run, ev)
    sev = _severity(int(cols.size), float(median[worst_col]), t.large_update_error, t)
    return [Finding(Kind.LARGE_UPDATES, sev, layer_names(run, sorted(worst_layers)), _steps(run, cols), ev, cause,
                    remedies)]


def activation_growth(run: RunView, t: Thresholds) -> list[Finding]:
    """act_std (and max |logit|) against each layer's first recorded value."""
    series = []
    for stat in (Stat.ACT_STD.value, Stat.LOGIT_MAX.value):
        if stat not in run.stats:
            continue
        m = run.stat_matrix(stat, copy=False)
        first = _first_values(m)
        scale = np.nanmedian(first[first > 0]) if np.any(first > 0) else np.nan
        for i, info in enumerate(run.layer_info):
            if info.role is Role.EMBEDDING or not first[i] > 1e-6 * scale:  # embeddings; zero-init outputs
                continue
            series.append((i, stat, m[i] / first[i]))
    if not series:
        return []
    growth = np.array([s for _, _, s in series])
    growth = np.where(np.isfinite(growth), growth, -np.inf)  # non-finite values are the nonfinite rule's
    hit = growth >= t.activation_growth_warning
    flagged_cols = np.flatnonzero(hit.any(axis=0))
    if flagged_cols.size == 0:
        return []
    k, worst_col = np.unravel_index(int(np.argmax(growth)), growth.shape)
    layers = sorted({series[j][0] for j in np.flatnonzero(hit.any(axis=1))})
    worst_layer, worst_stat, _ = series[k]
    ev = {"worst_layer": run.layer_info[worst_layer].name, "stat": worst_stat, "growth_max": float(growth[k, worst_col]),
          "at_step": int(run.steps[worst_col]), "first_flagged_step": int(run.steps[flagged_cols[0]]),
          "n_steps_flagged": int(flagged_cols.size), "n_layers_flagged": len(layers)}
    diverged = loss_diverged_step(run, t)
    if diverged is not None:
        ev["loss_spike_step"] = diverged
    cause, remedies = advice.activation_growth(run, ev)
    sev = _severity(int(flagged_cols.size), ev["growth_max"], t.activation_growth_error, t)
    return [Finding(Kind.ACTIVATION_GROWTH, sev, layer_names(run, layers), _steps(run, flagged_cols), ev, cause,
                    remedies)]


def attention(run: RunView, t: Thresholds) -> list[Finding]:
    """attention_logit_growth and attention_entropy_collapse, per attention site."""
    found = []
    if Stat.ATTN_LOGIT_MAX.value in run.stats:
        z = run.stat_matrix(Stat.ATTN_LOGIT_MAX.value, copy=False)
        first = _first_values(z)
        with np.errstate(invalid="ignore"):
            hit = (z >= t.attention_logit_warning) & (z >= t.attention_logit_growth * np.abs(first)[:, None])
        layers, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
        if cols.size:
            worst = float(np.nanmax(np.where(hit, z, np.nan)))
            i = int(np.nanargmax(np.where(hit, z, -np.inf).max(axis=1)))
            ev = {"worst_layer": run.layer_info[i].name, "attn_logit_max": worst, "attn_logit_first": float(first[i]),
                  "first_flagged_step": int(run.steps[cols[0]]), "n_steps_flagged": int(cols.size)}
            cause, remedies = advice.attention_logits(run, ev)
            found.append(Finding(Kind.ATTENTION_LOGIT_GROWTH,
                                 _severity(int(cols.size), worst, t.attention_logit_error, t),
                                 layer_names(run, list(layers)), _steps(run, cols), ev, cause, remedies))
    if Stat.ATTN_ENTROPY.value in run.stats:
        h = run.stat_matrix(Stat.ATTN_ENTROPY.value, copy=False)
        first = _first_values(h)
        with np.errstate(invalid="ignore"):
            hit = (h < t.entropy_collapse * first[:, None]) & (first[:, None] > 0.1)
        layers, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
        if cols.size:
            i = int(layers[0])
            ev = {"worst_layer": run.layer_info[i].name, "attn_entropy_first": float(first[i]),
                  "attn_entropy_min": float(np.nanmin(h[i])), "first_flagged_step": int(run.steps[cols[0]]),
                  "n_steps_flagged": int(cols.size)}
            cause, remedies = advice.entropy_collapse(run, ev)
            found.append(Finding(Kind.ATTENTION_ENTROPY_COLLAPSE,
                                 Severity.WARNING if cols.size >= t.instability_min_steps else Severity.INFO,
                                 layer_names(run, list(layers)), _steps(run, cols), ev, cause, remedies))
    return found


def _loss_spikes(run: RunView, t: Thresholds) -> list[tuple[int, float, float]]:
    """(step, loss, running median before) of every spike of the logged loss."""
    loss = loss_series(run)
    if loss is None:
        return []
    cols = np.flatnonzero(np.isfinite(loss))
    if cols.size < t.spike_min_history + 1:
        return []
    scale = abs(float(loss[cols[0]]))
    values = loss[cols]
    medians = running_medians(values, t.spike_history, t.spike_min_history)  # k = spike_min_history ...
    now = values[t.spike_min_history:]
    hits = np.flatnonzero((now >= t.loss_spike_factor * medians) & (now - medians >= t.loss_spike_scale * scale))
    return [(int(run.steps[cols[h + t.spike_min_history]]), float(now[h]), float(medians[h])) for h in hits]


def loss_spike(run: RunView, t: Thresholds) -> list[Finding]:
    spikes = _loss_spikes(run, t)
    if not spikes:
        return []
    loss = loss_series(run)
    first = float(loss[np.flatnonzero(np.isfinite(loss))[0]])
    step, value, med = max(spikes, key=lambda s: s[1] / s[2] if s[2] > 0 else math.inf)
    ev = {"first_spike_step": spikes[0][0], "worst_spike_step": step, "loss": value, "running_median": med,
          "first_loss": first, "n_spikes": len(spikes)}
    above_start = any(v >= first for _, v, _ in spikes)
    ev.update(_recovery(run, loss, spikes[-1][0], first, t))
    cause, remedies = advice.loss_spike(run, ev, above_start=above_start)
    sev = Severity.ERROR if above_start and not ev["recovered"] else Severity.WARNING
    return [Finding(Kind.LOSS_SPIKE, sev, (), (spikes[0][0], spikes[-1][0]), ev, cause, remedies)]


def _recovery(run: RunView, loss: np.ndarray, last_spike: int, first: float, t: Thresholds) -> dict[str, Any]:
    """Did the loss come back after its last spike? The median of the last `spike_history` finite losses, all
    recorded after the last spike, at or below `loss_recovered_fraction` of the first loss."""
    cols = np.flatnonzero(np.isfinite(loss))
    tail = cols[-t.spike_history:]
    after = tail.size == t.spike_history and int(run.steps[tail[0]]) > last_spike and bool(np.isfinite(loss[-1]))
    end = float(np.median(loss[tail])) if tail.size else math.nan
    return {"loss_end": end, "recovered": int(bool(after and end <= t.loss_recovered_fraction * first))}  # 1 or 0
