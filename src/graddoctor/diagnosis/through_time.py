"""Rules `vanishing_through_time` and `exploding_through_time` (docs/through-time.md).

They read the per-time-step gradient norms of recurrent layers (`in_grad_norm_t`: ||dL/dx_t|| at
the layer's input, `out_grad_norm_t`: at its output) and W_hh's Pascanu bound. For a window of
recorded steps (the first `early_steps`, the last `late_steps`), the profile is the median over
the window of each time bucket. It is read from the input side of the sequence (t = 0) to the
output side (t = T-1): `ratio` = g(first bucket) / g(last bucket), `factor_per_step` = the
geometric fit's multiplier of the gradient per time step back in time, `zero_frac` = buckets whose
gradient is exactly 0. A loss at every position keeps the input-side profile flat (each step gets
its own local gradient): the rules then see no trend, and `graddoctor check`'s temporal probe
(loss at the last position only) is the measurement that shows the flow through time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..store.view import RunView
from .findings import Advice, Finding, Kind, Severity, advise
from .profile import TINY, loss_change
from .thresholds import Thresholds

IN, OUT = "in_grad_norm_t", "out_grad_norm_t"
PROBE = "in_grad_norm_t_last"  # diagnosis.temporal: check's probe, d l_T / d x_t


@dataclasses.dataclass(frozen=True)
class TimeThresholds:
    """Defaults of the through-time rules, each with its reason."""

    vanishing_warning: float = 1e-4   # the first step gets 1e-4 of the last one's gradient: ~9 steps at 0.35/step
    vanishing_error: float = 1e-7     # below float32's resolution of a sum with the last step's gradient
    zero_error: float = 0.2           # a fifth of the steps get exactly 0: no signal at all reaches them
    exploding_warning: float = 1e3    # the input side gets 1000x the output side
    exploding_error: float = 1e6      # a million: a single step's update is dominated by the oldest inputs
    learned: float = -0.2             # the loss fell by 20% or more: the task may not need that memory


@dataclasses.dataclass(frozen=True)
class TimeProfile:
    layer: str
    window: str                 # "start" or "end"
    steps: tuple[int, int]
    edges: tuple[int, ...]
    grads: np.ndarray           # per bucket, input side (t = 0) first
    out_grads: np.ndarray       # the same for the output side's gradient (dL/dy_t), or empty
    ratio: float
    factor_per_step: float
    zero_frac: float


def time_profiles(run: RunView, layer: str, t: Thresholds) -> list[TimeProfile]:
    values, edges = run.time_stat(IN, layer)
    rows = np.flatnonzero(~np.all(np.isnan(values), axis=1)) if values.size else np.array([], dtype=int)
    if rows.size == 0 or len(edges) < 3:  # fewer than 2 time steps: no trend to read
        return []
    out_values, out_edges = run.time_stat(OUT, layer)
    wins = [("start", rows[: t.early_steps]), ("end", rows[-t.late_steps:])]
    return [_profile(run, layer, label, cols, values, edges, out_values if out_edges == edges else None)
            for label, cols in wins]


def probe_profiles(run: RunView, layer: str) -> list[TimeProfile]:
    """The temporal probe of `graddoctor check` (loss at the last position only), window "probe"."""
    values, edges = run.time_stat(PROBE, layer)
    rows = np.flatnonzero(~np.all(np.isnan(values), axis=1)) if values.size else np.array([], dtype=int)
    if rows.size == 0 or len(edges) < 3:
        return []
    return [_profile(run, layer, "probe", rows[:1], values, edges, None)]


def _layers(run: RunView) -> list[str]:
    found = set(run.time_layers(IN)) | set(run.time_layers(PROBE))
    return [name for name in run.layers if name in found]


def _one_batch(run: RunView) -> bool:
    """A `graddoctor check` run repeats one batch: its falling loss is memorisation, not learning."""
    return "check" in (run.config.get("user") or {})


def _gated(run: RunView, layer: str) -> bool:
    return _layer_type(run, layer) in ("LSTM", "GRU", "LSTMCell", "GRUCell")


def _profile(run, layer, label, cols, values, edges, out_values) -> TimeProfile:
    g = _median(values[cols])
    out = _median(out_values[cols]) if out_values is not None and out_values.size else np.array([])
    finite = np.isfinite(g)
    zero_frac = float(np.mean(g[finite] == 0)) if finite.any() else math.nan
    last = g[-1]
    ratio = float(g[0] / last) if np.isfinite(g[0]) and last > 0 else math.inf if last == 0 and g[0] > 0 else math.nan
    if not np.all(finite):
        ratio = math.inf  # an infinite gradient on the way: exploded
    centres = (np.asarray(edges[:-1]) + np.asarray(edges[1:]) - 1) / 2.0
    keep = finite & (g > 0)
    factor = math.nan
    if keep.sum() >= 2:
        slope = np.polyfit(centres[keep], np.log(np.maximum(g[keep], TINY)), 1)[0]
        factor = float(math.exp(-slope))
    steps = (int(run.steps[cols[0]]), int(run.steps[cols[-1]]))
    return TimeProfile(layer, label, steps, tuple(edges), g, out, ratio, factor, zero_frac)


def _median(block: np.ndarray) -> np.ndarray:
    out = np.full(block.shape[1], np.nan)
    for j in range(block.shape[1]):
        col = block[:, j]
        col = col[~np.isnan(col)]
        if col.size:
            out[j] = np.median(col)
    return out


def _vanishing(p: TimeProfile, tt: TimeThresholds) -> bool:
    return (p.ratio <= tt.vanishing_warning or p.zero_frac >= tt.zero_error) and not p.ratio > 1


def _exploding(p: TimeProfile, tt: TimeThresholds) -> bool:
    return p.ratio >= tt.exploding_warning


def bound_evidence(run: RunView, layer: str) -> dict[str, float | str]:
    """The Pascanu bound at the first record (init) and the last: max over blocks of gamma*sigma_max, radius."""
    sigma, labels = run.time_stat("hh_sigma_max", layer)
    radius, _ = run.time_stat("hh_radius", layer)
    gamma, _ = run.time_stat("hh_gamma", layer)
    rows = np.flatnonzero(~np.all(np.isnan(sigma), axis=1)) if sigma.size else []
    ev: dict[str, float | str] = {}
    for tag, row in (("init", rows[0] if len(rows) else None), ("last", rows[-1] if len(rows) > 1 else None)):
        if row is None:
            continue
        b = gamma[row] * sigma[row]
        k = int(np.nanargmax(b))
        ev[f"bound_gamma_sigma_max_{tag}"] = float(b[k])
        ev[f"hh_sigma_max_{tag}"] = float(np.nanmax(sigma[row]))
        ev[f"hh_radius_{tag}"] = float(np.nanmax(radius[row]))
        ev[f"bound_block_{tag}"] = str(labels[k])
        ev[f"bound_step_{tag}"] = int(run.steps[row])
    return ev


def _per_step_evidence(p: TimeProfile) -> dict[str, float]:
    """A few buckets of the profile by name: t = first, a quarter, half, three quarters, last."""
    n = len(p.grads)
    picks = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})
    return {f"grad_t{p.edges[b]}": float(p.grads[b]) for b in picks}


def _evidence(run: RunView, p: TimeProfile, other: TimeProfile | None) -> dict:
    ev: dict = {
        "time_steps": int(p.edges[-1]), "buckets": len(p.grads), "window": p.window,
        "ratio_first_to_last": p.ratio, "factor_per_step": p.factor_per_step, "zero_frac": p.zero_frac,
        **_per_step_evidence(p),
    }
    if other is not None:
        ev[f"ratio_first_to_last_{other.window}"] = other.ratio
    if p.out_grads.size:
        ev["output_side_nonzero_frac"] = float(np.mean(p.out_grads > 0))
    ev.update(bound_evidence(run, p.layer))
    return ev


def _layer_type(run: RunView, layer: str) -> str:
    return next(info.type for info in run.layer_info if info.name == layer)


def _nonlinearity(run: RunView, layer: str) -> str:
    """'relu' for a ReLU RNN: its W_hh block is labelled by the nonlinearity ('l0.relu')."""
    _, labels = run.time_stat("hh_gamma", layer)
    return "relu" if any(str(label).endswith(".relu") or label == "relu" for label in labels) else "tanh"


def vanishing_through_time(run: RunView, t: Thresholds, tt: TimeThresholds = TimeThresholds()) -> list[Finding]:
    """The gradient at a recurrent layer's input shrinks from the last time step back to the first."""
    found = []
    for layer in _layers(run):
        profiles = time_profiles(run, layer, t)
        hits = [p for p in profiles + probe_profiles(run, layer) if _vanishing(p, tt)]
        if not hits:
            continue
        p = min(hits, key=lambda q: (q.ratio, -q.zero_frac))
        severe = p.ratio <= tt.vanishing_error or p.zero_frac >= tt.zero_error
        change = loss_change(run, t.early_steps, t.late_steps)
        ev = _evidence(run, p, next((q for q in profiles if q is not p), None))
        if p.window == "probe":  # one batch memorised says nothing about learning; gates at init learn to open
            resolved, learned = False, False
            severity = Severity.ERROR if severe else Severity.INFO if _gated(run, layer) else Severity.WARNING
        else:
            resolved = p.window == "start" and bool(profiles) and not _vanishing(profiles[-1], tt)
            learned = change is not None and change <= tt.learned and not _one_batch(run)
            # a gated cell whose loss falls has learned what it needs: its gates open where memory pays
            quiet = resolved or (learned and _gated(run, layer))
            severity = Severity.INFO if quiet else Severity.ERROR if severe and not learned else Severity.WARNING
        if change is not None:
            ev["loss_relative_change"] = change
        found.append(Finding(Kind.VANISHING_THROUGH_TIME, severity, (layer,), p.steps, ev,
                             _vanishing_cause(run, p, ev, learned, resolved), _vanishing_remedies(run, p, ev)))
    return found


def exploding_through_time(run: RunView, t: Thresholds, tt: TimeThresholds = TimeThresholds()) -> list[Finding]:
    """The gradient at a recurrent layer's input grows from the last time step back to the first."""
    found = []
    for layer in _layers(run):
        profiles = time_profiles(run, layer, t)
        hits = [p for p in profiles + probe_profiles(run, layer) if _exploding(p, tt)]
        if not hits:
            continue
        p = max(hits, key=lambda q: q.ratio)
        end = profiles[-1] if profiles else p
        resolved = p.window == "start" and not _exploding(end, tt) and not _vanishing(end, tt)
        severe = p.ratio >= tt.exploding_error
        ev = _evidence(run, p, next((q for q in profiles if q is not p), None))
        severity = Severity.INFO if resolved else Severity.ERROR if severe else Severity.WARNING
        found.append(Finding(Kind.EXPLODING_THROUGH_TIME, severity, (layer,), p.steps, ev,
                             _exploding_cause(p, ev), _exploding_remedies(run, p)))
    return found


def _g(x: float) -> str:
    return f"{x:.3g}"


def _vanishing_cause(run: RunView, p: TimeProfile, ev: dict, learned: bool, resolved: bool) -> str:
    T = p.edges[-1]
    parts = [
        f"In recurrent layer {p.layer!r} ({_layer_type(run, p.layer)}, {T} time steps), the gradient reaching the "
        f"input at the first time step is {'exactly 0' if p.ratio == 0 else _g(p.ratio) + ' times the one at the last'} "
        f"({_where(p)}): it is multiplied by about "
        f"{_g(p.factor_per_step)} per time step back through W_hh (geometric fit over t)."
    ]
    if p.zero_frac > 0:
        parts.append(f"{p.zero_frac:.0%} of the time steps get a gradient of exactly 0: nothing from the loss reaches them.")
    bound = ev.get("bound_gamma_sigma_max_init")
    if isinstance(bound, float):
        if bound < 1:
            parts.append(f"At init gamma*sigma_max(W_hh) = {_g(bound)} < 1 (block {ev['bound_block_init']}): by Pascanu "
                         f"et al. (2013) the gradient through k steps is at most {_g(bound)}^k, so vanishing is guaranteed.")
        elif ev["hh_radius_init"] < 1:
            parts.append(f"At init W_hh's spectral radius is {_g(ev['hh_radius_init'])} < 1 (gamma*sigma_max = {_g(bound)}, "
                         f"block {ev['bound_block_init']}): over many steps W_hh^k shrinks like {_g(ev['hh_radius_init'])}^k, "
                         f"and tanh' <= 1 only shrinks it further.")
        else:
            parts.append(f"At init gamma*sigma_max(W_hh) = {_g(bound)} and the spectral radius is {_g(ev['hh_radius_init'])} "
                         f"(block {ev['bound_block_init']}): W_hh alone would not shrink the gradient, so saturated units or "
                         f"closing gates do.")
    parts.append(f"Dependencies longer than about {_horizon(p)} steps cannot be learned this way.")
    if resolved:
        parts.append("It is gone in the last recorded steps.")
    elif learned:
        parts.append(f"The loss still fell by {-ev['loss_relative_change']:.0%}: the task may need only short memory.")
    return " ".join(parts)


def _where(p: TimeProfile) -> str:
    if p.window == "probe":
        return f"temporal probe at step {p.steps[0]}: the loss at the last position only"
    return f"{p.window} of training, steps {p.steps[0]}-{p.steps[1]}"


def _horizon(p: TimeProfile) -> int:
    """Time steps back from the last one until the gradient is below 1e-3 of the last step's."""
    last = p.grads[-1]
    ok = np.flatnonzero(p.grads >= 1e-3 * last) if last > 0 else np.array([len(p.grads) - 1])
    return int(p.edges[-1] - p.edges[int(ok[0])]) if ok.size else 1


def _exploding_cause(p: TimeProfile, ev: dict) -> str:
    parts = [
        f"In recurrent layer {p.layer!r} ({p.edges[-1]} time steps), the gradient at the input at the first time step is "
        f"{_g(p.ratio)} times the one at the last ({_where(p)}): it is multiplied by about "
        f"{_g(p.factor_per_step)} per time step back through W_hh, so the oldest inputs dominate every update."
    ]
    radius = ev.get("hh_radius_init")
    if isinstance(radius, float) and math.isfinite(radius):
        parts.append(f"W_hh's spectral radius is {_g(radius)} at init and its largest singular value "
                     f"{_g(ev['hh_sigma_max_init'])}: gamma*sigma_max = {_g(ev['bound_gamma_sigma_max_init'])} > 1 is the "
                     f"necessary condition for exploding (Pascanu et al. 2013).")
    return " ".join(parts)


def _vanishing_remedies(run: RunView, p: TimeProfile, ev: dict) -> tuple[Advice, ...]:
    kind = _layer_type(run, p.layer)
    gated = kind in ("LSTM", "GRU", "LSTMCell", "GRUCell")
    relu = _nonlinearity(run, p.layer) == "relu"
    out: list[Advice] = []
    if not gated:
        out.append(advise("swap_cell", f"An LSTM/GRU's additive cell state carries the gradient with a factor set by "
                                       f"its gates, not by W_hh's {_g(p.factor_per_step)} per step."))
    if relu and not gated:
        out.append(advise("identity_init", "For a ReLU RNN, W_hh = I (Le et al. 2015) keeps each step's factor at 1."))
    out.append(advise("orthogonal_init", "An orthogonal W_hh has every singular value 1: gamma*sigma_max = 1 at init "
                                         "instead of " + _g(float(ev.get("bound_gamma_sigma_max_init", math.nan))) + "."))
    if gated:
        out.append(advise("forget_bias", "A forget-gate bias of 1 keeps the cell state's factor near sigmoid(1) = 0.73 "
                                         "per step at init instead of 0.5."))
    out.append(advise("shorter_truncation", f"Only about {_horizon(p)} steps are reached: shorter sequences (or "
                                            f"truncated BPTT at that length) waste no compute on the rest."))
    out.append(advise("skip_in_time", "Connections that skip time steps (or attention over the sequence) shorten the "
                                      "path from the loss to the first inputs."))
    return tuple(out)


def _exploding_remedies(run: RunView, p: TimeProfile) -> tuple[Advice, ...]:
    return (
        advise("grad_clip", "Clipping the gradient norm bounds the step that the oldest time steps' huge gradient "
                            "would otherwise take (Pascanu et al. 2013)."),
        advise("orthogonal_init", "An orthogonal W_hh starts with every singular value 1 instead of the current "
                                  f"growth of {_g(p.factor_per_step)} per step."),
        advise("lower_lr", "Smaller steps keep W_hh from growing its spectral radius further."),
        advise("shorter_truncation", "Fewer time steps per backward: less room to multiply."),
    )
