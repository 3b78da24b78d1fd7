"""The diagnosis rules: one small pure function per rule, `(RunView, Thresholds) -> list[Finding]`.

Each rule measures, decides a severity from `Thresholds`, and hands its evidence to `advice`,
which writes the cause and ranks the remedies. `RULES` lists them, in reading order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from ..config import Stat, update_stat
from ..store.view import RunView
from . import advice, evidence, through_time
from .families import activation_layers, dense_update_layers, weight_layers
from . import instability
from .findings import Finding, Kind, Severity
from .profile import (
    DepthProfile, Window, depth_profile, estimated, finite_columns, layer_names, loss_change, nonfinite_cells, nonfinite_columns,
    running_medians, total_grad_norm, window_values, windows,
)
from .thresholds import Thresholds

Rule = Callable[[RunView, Thresholds], list[Finding]]


def vanishing_gradient(run: RunView, t: Thresholds) -> list[Finding]:
    """The pre-activation gradient shrinks from the output side to the input side; or every update is tiny."""
    found = []
    profile = _worst_profile(run, t, vanishing=True)
    if profile is not None:
        found.append(_depth_finding(run, t, profile, vanishing=True))
    tiny = _uniform_tiny_updates(run, t)
    if tiny is not None:
        found.append(tiny)
    return found


def exploding_gradient(run: RunView, t: Thresholds) -> list[Finding]:
    """The gradient grows toward the input side, or its norm spikes or keeps growing over time."""
    found = []
    profile = _worst_profile(run, t, vanishing=False)
    if profile is not None:
        found.append(_depth_finding(run, t, profile, vanishing=False))
    spike = _spikes(run, t)
    if spike is not None:
        found.append(spike)
    return found


def _profiles(run: RunView, t: Thresholds) -> list[DepthProfile]:
    """Depth profiles of the first and the last window (fewer when layers or finite steps are missing)."""
    wins = windows(run, t.early_steps, t.late_steps) or ()
    return [p for p in (depth_profile(run, w, t.min_weight_layers) for w in wins) if p is not None]


def _flagged(p: DepthProfile, t: Thresholds, vanishing: bool) -> bool:
    if vanishing:
        return p.ratio <= t.vanishing_warning and p.factor <= t.trend_factor
    return p.ratio >= t.exploding_warning and p.factor >= 1 / t.trend_factor


def _worst_profile(run: RunView, t: Thresholds, *, vanishing: bool) -> DepthProfile | None:
    """The window (start or end) whose depth profile passes the thresholds furthest, if any."""
    hits = [p for p in _profiles(run, t) if _flagged(p, t, vanishing)]
    if not hits:
        return None
    return min(hits, key=lambda p: p.ratio) if vanishing else max(hits, key=lambda p: p.ratio)


def _depth_finding(run: RunView, t: Thresholds, p: DepthProfile, *, vanishing: bool) -> Finding:
    last = p.grads[-1]
    if vanishing:
        flagged = [i for i, g in zip(p.layers, p.grads) if g <= t.vanishing_warning * last]
        severe = p.ratio <= t.vanishing_error
    else:
        flagged = [i for i, g in zip(p.layers, p.grads) if g >= t.exploding_warning * last]
        severe = p.ratio >= t.exploding_error
    other = next((q for q in _profiles(run, t) if q.window.label != p.window.label), None)
    # Present at the start, gone in a later, separate window: it resolved itself during training.
    resolved = other is not None and other.window.cols[0] > p.window.cols[-1] and not _flagged(other, t, vanishing)
    ev = evidence.depth_evidence(run, p, other.ratio if other is not None else math.nan)
    cause, remedies = advice.depth(run, p, ev, vanishing=vanishing, resolved=resolved)
    return Finding(
        kind=Kind.VANISHING_GRADIENT if vanishing else Kind.EXPLODING_GRADIENT,
        severity=Severity.INFO if resolved else Severity.ERROR if severe else Severity.WARNING,
        layers=layer_names(run, flagged),
        step_range=p.window.steps(run),
        evidence=ev,
        cause=cause,
        remedies=remedies,
    )


def _uniform_tiny_updates(run: RunView, t: Thresholds) -> Finding | None:
    """Every weight layer's update_ratio far below ~1e-3 while the loss stays flat."""
    stat = update_stat(run.stats)  # the exact update_ratio, else its estimate
    wins = windows(run, t.early_steps, t.late_steps, stat=stat)  # full tier: its own steps
    idx = weight_layers(run)
    if wins is None or not idx:
        return None
    late = wins[1]
    updates = window_values(run.stat_matrix(stat, copy=False), late.cols)[idx]
    updates = updates[np.isfinite(updates)]
    if updates.size == 0 or updates.max() > t.tiny_update:
        return None
    change = loss_change(run, t.early_steps, t.late_steps)
    if change is not None and abs(change) >= t.flat_loss:
        return None  # tiny steps, but the loss moves: slow, not stuck
    ev = {"max_update_ratio": float(updates.max()), "median_update_ratio": float(np.median(updates)),
          "n_weight_layers": int(updates.size), "window_steps": int(late.cols.size), **estimated(stat)}
    if change is not None:
        ev["loss_relative_change"] = change
    cause, remedies = advice.tiny_updates(run, ev)
    return Finding(Kind.VANISHING_GRADIENT, Severity.WARNING if change is not None else Severity.INFO,
                   layer_names(run, idx), late.steps(run), ev, cause, remedies)


def _spikes(run: RunView, t: Thresholds) -> Finding | None:
    """Total gradient norm far above the running median of the steps before, or growing for good."""
    total = total_grad_norm(run, pre_clip=_pre_clip_everywhere(run))  # clipping hides spikes: read them before it
    cols = finite_columns(run)
    cols = cols[np.isfinite(total[cols]) & (total[cols] > 0)]
    ratios = total[cols[t.spike_min_history:]] / running_medians(total[cols], t.spike_history, t.spike_min_history)
    # judged against the run's own scale too: a converged run's noisy batch far below the start is no spike
    start = float(np.median(total[cols[:t.early_steps]])) if cols.size else math.nan
    hits = np.flatnonzero((ratios >= t.spike_factor) & (total[cols[t.spike_min_history:]] >= t.spike_start_fraction * start))
    spikes = [(float(ratios[h]), int(h) + t.spike_min_history) for h in hits]
    growth = _growth(total, cols, t)
    if not spikes and not growth >= t.growth_warning:  # NaN growth (short run) counts as none
        return None
    first_k = spikes[0][1] if spikes else len(cols) - 1
    worst = max((r for r, _ in spikes), default=math.nan)
    layers = _spiking_layers(run, cols, first_k, t)
    bad = nonfinite_columns(run)
    after_nonfinite = bool(bad.size and bad[-1] > cols[first_k])
    ev = evidence.spike_evidence(run, total, cols, spikes, growth)
    severe = bool(spikes) and worst >= t.spike_error or after_nonfinite
    cause, remedies = advice.spikes(run, ev, nonfinite_followed=after_nonfinite)
    return Finding(Kind.EXPLODING_GRADIENT, Severity.ERROR if severe else Severity.WARNING, layers,
                   (int(run.steps[cols[first_k]]), int(run.steps[cols[-1]])), ev, cause, remedies)


def _pre_clip_everywhere(run: RunView) -> bool:
    """Whether grad_norm_pre_clip (full tier) was recorded at every step grad_norm (cheap tier) was:
    spikes are judged on one series, never on pre-clip norms at some steps and clipped ones at others."""
    pre = Stat.GRAD_NORM_PRE_CLIP.value
    if pre not in run.stats:
        return False
    return bool(np.all(run.recorded(pre).any(axis=0) >= run.recorded(Stat.GRAD_NORM.value).any(axis=0)))


def _growth(total: np.ndarray, cols: np.ndarray, t: Thresholds) -> float:
    if cols.size < t.early_steps + t.late_steps:
        return math.nan  # too short to tell a trend from the first steps' transients
    start = float(np.median(total[cols[:t.early_steps]]))
    return float(np.median(total[cols[-t.late_steps:]])) / start


def _spiking_layers(run: RunView, cols: np.ndarray, k: int, t: Thresholds) -> tuple[str, ...]:
    """Layers whose own grad_norm at column cols[k] is >= spike_factor x their running median."""
    g = run.stat_matrix(Stat.GRAD_NORM.value, copy=False)
    history = cols[max(0, k - t.spike_history):k]
    out = []
    for i in np.flatnonzero(run.recorded(Stat.GRAD_NORM.value, copy=False)[:, cols[k]]):
        base = np.median(g[i, history]) if history.size else math.nan
        if base > 0 and g[i, cols[k]] >= t.spike_factor * base:
            out.append(int(i))
    return layer_names(run, out or list(weight_layers(run)))


def dead_units(run: RunView, t: Thresholds) -> list[Finding]:
    """Activation layers whose units stay exactly 0 on every batch of the last window of steps."""
    wins = _stat_windows(run, Stat.DEAD_FRAC.value, t)
    if wins is None:
        return []
    early, late = wins
    dead_frac = run.stat_matrix(Stat.DEAD_FRAC.value, copy=False)
    now = window_values(dead_frac, late.cols, how="min")     # dead on every step of the window
    before = window_values(dead_frac, early.cols, how="min")
    flagged = [i for i in activation_layers(run) if np.isfinite(now[i]) and now[i] >= t.dead_warning]
    if not flagged:
        return []
    enough = late.cols.size >= t.min_window_steps
    # All units dead on most steps: the gradient below is zero then, even if an outlier sample
    # wakes a unit now and again.
    typical = window_values(dead_frac, late.cols)
    all_dead = [i for i in flagged if typical[i] >= t.dead_all]
    severity = (Severity.ERROR if all_dead else Severity.WARNING) if enough else Severity.INFO
    ev = evidence.dead_evidence(run, flagged, now, before, late)
    cause, remedies = advice.dead(run, flagged, all_dead, before, ev, t)
    return [Finding(Kind.DEAD_UNITS, severity, layer_names(run, flagged), late.steps(run), ev, cause, remedies)]


def saturated_units(run: RunView, t: Thresholds) -> list[Finding]:
    """Saturating activations with a large share of outputs in the flat region, at the start or now."""
    wins = _stat_windows(run, Stat.SATURATED_FRAC.value, t)
    if wins is None:
        return []
    early, late = wins
    sat = run.stat_matrix(Stat.SATURATED_FRAC.value, copy=False)
    start, now = window_values(sat, early.cols), window_values(sat, late.cols)
    worst = np.fmax(start, now)
    flagged = [i for i in activation_layers(run) if np.isfinite(worst[i]) and worst[i] >= t.saturated_warning]
    if not flagged:
        return []
    peak = max(worst[i] for i in flagged)
    developed = all(not start[i] >= t.saturated_warning for i in flagged)  # NaN start counts as not saturated
    change = loss_change(run, t.early_steps, t.late_steps)
    learning = developed and change is not None and change <= -10 * t.flat_loss
    severity = Severity.ERROR if peak >= t.saturated_error else Severity.WARNING
    if learning:  # saturation that grows while the loss falls is often the net committing to features
        severity = Severity.WARNING if severity is Severity.ERROR else Severity.INFO
    window = late if developed else early
    ev = evidence.saturation_evidence(run, flagged, start, now, change)
    cause, remedies = advice.saturation(run, flagged, ev, threshold=t.saturated_warning, developed=developed,
                                      learning=learning)
    return [Finding(Kind.SATURATED_UNITS, severity, layer_names(run, flagged), window.steps(run), ev, cause,
                    remedies)]


def _stat_windows(run: RunView, stat: str, t: Thresholds) -> tuple[Window, Window] | None:
    cols = np.flatnonzero(run.recorded(stat, copy=False).any(axis=0))
    if cols.size == 0:
        return None
    return Window("start", cols[:t.early_steps]), Window("end", cols[-t.late_steps:])


def nonfinite(run: RunView, t: Thresholds) -> list[Finding]:
    """The first step and layer where NaN/Inf appeared, and what the gradient did before it."""
    first = _first_nonfinite(run)
    if first is None:
        return []
    step, layer, stat = first
    ev = evidence.nonfinite_evidence(run, step, layer, stat, total_grad_norm(run), t)
    nf = run.first_nonfinite or {}
    if nf.get("pass") and nf.get("step") == step:  # the store's origin, pass by pass (probes.origin)
        layer, ev["first_layer"], ev["first_stat"], ev["origin_pass"] = nf["layer"], nf["layer"], nf["stat"], nf["pass"]
    cause, remedies = advice.nonfinite(run, ev, t)
    last_bad = int(ev["last_nonfinite_step"])
    layers = (layer,) if layer else ()
    return [Finding(Kind.NONFINITE, Severity.ERROR, layers, (step, last_bad), ev, cause, remedies)]


def _first_nonfinite(run: RunView) -> tuple[int, str, str] | None:
    """(step, layer, stat) of the first non-finite statistic (input-most layer), or of a non-finite scalar."""
    for j in nonfinite_columns(run)[:1]:
        cells = nonfinite_cells(run, int(j))
        if cells:
            i, stat = min(cells)
            return int(run.steps[j]), run.layer_info[i].name, stat
        return int(run.steps[j]), "", "loss"  # an infinite logged loss with finite statistics
    return None


def stalled_updates(run: RunView, t: Thresholds) -> list[Finding]:
    """Layers whose update_ratio stays orders of magnitude below the median layer's."""
    stat = update_stat(run.stats)  # the exact update_ratio, else its estimate
    wins = windows(run, t.early_steps, t.late_steps, stat=stat)  # full tier: its own steps
    idx = dense_update_layers(run)
    if wins is None or len(idx) < 2:
        return []
    late = wins[1]
    updates = window_values(run.stat_matrix(stat, copy=False), late.cols)
    known = [i for i in idx if np.isfinite(updates[i])]
    if len(known) < 2:
        return []
    reference = float(np.median(updates[known]))
    stalled = [i for i in known if reference > 0 and updates[i] < t.stalled_factor * reference]
    if not stalled:
        return []
    severity = Severity.WARNING if late.cols.size >= t.min_window_steps else Severity.INFO
    ev = {**evidence.stalled_evidence(run, stalled, known, updates, reference, late), **estimated(stat)}
    cause, remedies = advice.stalled(run, stalled, ev)
    return [Finding(Kind.STALLED_UPDATES, severity, layer_names(run, stalled), late.steps(run), ev, cause,
                    remedies)]


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """A registered rule: the kind it reports, the function that decides it, and the watch tier it
    reads: "cheap" (gradient and dL/d output norms, scalars: every recorded step) or "full"
    (activation, weight, update, through-time, logit or attention statistics: full-tier steps
    only, its windows taken over those steps; profile.FULL_TIER)."""

    kind: Kind
    check: Rule
    tier: str = "cheap"


RULES: tuple[RuleSpec, ...] = (
    RuleSpec(Kind.NONFINITE, nonfinite),  # any non-finite statistic; first found among the cheap ones
    RuleSpec(Kind.VANISHING_GRADIENT, vanishing_gradient),  # depth profile: cheap; its tiny-update check: full
    RuleSpec(Kind.EXPLODING_GRADIENT, exploding_gradient),
    RuleSpec(Kind.DEAD_UNITS, dead_units, tier="full"),
    RuleSpec(Kind.SATURATED_UNITS, saturated_units, tier="full"),
    RuleSpec(Kind.STALLED_UPDATES, stalled_updates, tier="full"),
    RuleSpec(Kind.VANISHING_THROUGH_TIME, through_time.vanishing_through_time, tier="full"),
    RuleSpec(Kind.EXPLODING_THROUGH_TIME, through_time.exploding_through_time, tier="full"),
    RuleSpec(Kind.LARGE_UPDATES, instability.large_updates, tier="full"),
    RuleSpec(Kind.ACTIVATION_GROWTH, instability.activation_growth, tier="full"),
    RuleSpec(Kind.ATTENTION_LOGIT_GROWTH, instability.attention, tier="full"),
    RuleSpec(Kind.LOSS_SPIKE, instability.loss_spike),
)
