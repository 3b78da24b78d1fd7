"""`diagnose`: run every rule over a recorded run and assemble the Diagnosis."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ..config import UPDATE_STATS, Stat, update_stat
from ..errors import ConfigError, GradDoctorError
from .._validate import check_instance, check_str, check_strings
from ..store.view import RunView, load
from .expected import annotate, expectation
from .findings import Diagnosis, Finding, Kind
from .profile import FULL_TIER, nonfinite_mask, window_values, windows
from .rules import RULES, RuleSpec
from .thresholds import Thresholds

_KIND_ORDER = {kind: k for k, kind in enumerate(Kind)}


def diagnose(
    run_or_path: Any,
    name: str | None = None,
    *,
    thresholds: Thresholds | None = None,
    rules: Sequence[RuleSpec] = RULES,
    notes: Sequence[str] = (),
    prediction: Any = None,
) -> Diagnosis:
    """Name what is wrong with a run's gradient flow: findings with evidence, causes and ranked remedies.

    Example:
        >>> d = graddoctor.diagnose("runs.db", name="exp1")          # doctest: +SKIP
        >>> print(d)                                                 # doctest: +SKIP
        >>> d.reaches("error"), d.kinds                              # doctest: +SKIP

    Args:
        run_or_path: a store path (the latest run, or the latest called `name`), a `RunView` from
            `graddoctor.load`, or a live run from `graddoctor.watch`.
        name: run name inside the store (only with a path).
        thresholds: the rules' thresholds (default `Thresholds()`).
        rules: the rules to run (default: all of `RULES`).
        notes: lines to show with the findings (how the run was produced).
        prediction: a `graddoctor.predict(model)` result for the run's model at its initialization:
            its per-layer factors are shown next to the measured ones, and vanishing/exploding
            findings quote what theory expected.

    Returns:
        A `Diagnosis`: findings worst first, a per-layer summary; `print` it or call `.to_json()`.

    Raises:
        StoreError: the path is missing, not a store, or holds no run (called `name`).
        GradDoctorError: the run has no recorded step yet.
    """
    check_str("name", name, optional=True)
    check_instance("thresholds", thresholds, Thresholds, "a graddoctor.Thresholds (or None for the defaults)",
                   optional=True)
    check_strings("notes", notes, allow_str=False)
    run = _resolve(run_or_path, name)
    if len(run.steps) == 0:
        raise GradDoctorError(
            f"run {run.name!r} has no recorded step yet: nothing to diagnose. Train at least one step inside "
            f"graddoctor.watch(...) first."
        )
    t = thresholds or Thresholds()
    findings = [f for rule in rules for f in rule.check(run, t)]
    comparison = expectation(prediction, run) if prediction is not None else None
    if comparison is not None:
        findings = [annotate(f, comparison) for f in findings]
    findings.sort(key=lambda f: (-f.severity.rank, _KIND_ORDER.get(f.kind, len(_KIND_ORDER))))
    return Diagnosis(
        run={"name": run.name, "status": run.status, "path": run.path, "n_steps": int(len(run.steps)),
             "first_step": int(run.steps[0]), "last_step": int(run.steps[-1]), "n_layers": len(run.layer_info)},
        findings=tuple(findings),
        layers=tuple(layer_summary(run, findings, t)),
        notes=tuple(notes) + tuple(_run_notes(run)),
        expected=comparison,
        guard_actions=tuple(a.to_dict() for a in run.guard_actions),
    )


def _resolve(source: Any, name: str | None) -> RunView:
    if isinstance(source, RunView):
        if name is not None and name != source.name:
            raise ConfigError(f"diagnose() got run {source.name!r} and name={name!r}; pass one or the other.")
        return source
    if isinstance(source, (str, os.PathLike)) or callable(getattr(source, "view", None)):
        return load(source, name=name) if isinstance(source, (str, os.PathLike)) else load(source)
    raise ConfigError(
        f"diagnose() takes a store path, a RunView (graddoctor.load) or a run from graddoctor.watch, "
        f"got {type(source).__name__}."
    )


def layer_summary(run: RunView, findings: list[Finding], t: Thresholds) -> list[dict[str, Any]]:
    """One dict per layer: type, kind, the key statistics at the start and the end, the kinds that name it."""
    wins = windows(run, t.early_steps, t.late_steps)
    cols_start = wins[0].cols if wins else np.arange(min(len(run.steps), t.early_steps))
    cols_end = wins[1].cols if wins else np.arange(max(0, len(run.steps) - t.late_steps), len(run.steps))
    reading = {
        "out_grad_start": (Stat.OUT_GRAD_NORM, cols_start), "out_grad_end": (Stat.OUT_GRAD_NORM, cols_end),
        "grad_norm_end": (Stat.GRAD_NORM, cols_end), "update_ratio_end": (Stat(update_stat(run.stats)), cols_end),
        "dead_frac_end": (Stat.DEAD_FRAC, cols_end), "saturated_frac_end": (Stat.SATURATED_FRAC, cols_end),
    }
    for key, (stat, _) in list(reading.items()):  # a full-tier statistic: the window of its own steps
        if stat.value in FULL_TIER and key.endswith("_end"):
            own = windows(run, t.early_steps, t.late_steps, stat=stat.value)
            if own is not None:
                reading[key] = (stat, own[1].cols)
    values = {key: window_values(run.stat_matrix(stat.value, copy=False), cols) for key, (stat, cols) in reading.items()}
    recorded = {key: run.recorded(stat.value, copy=False).any(axis=1) for key, (stat, _) in reading.items()}
    bad = np.zeros((len(run.layer_info), len(run.steps)), dtype=bool)
    for stat in run.stats:
        bad |= nonfinite_mask(run, stat)
    out = []
    for i, info in enumerate(run.layer_info):
        row: dict[str, Any] = {"name": info.name, "type": info.type, "kind": info.kind, "n_params": info.n_params}
        for key in reading:  # medians over the window's finite steps; the count below shows the others
            row[key] = float(values[key][i]) if recorded[key][i] else None
        row["nonfinite_steps"] = int(bad[i].sum())
        row["findings"] = sorted({str(f.kind) for f in findings if info.name in f.layers})
        out.append(row)
    return out


def _run_notes(run: RunView) -> list[str]:
    notes = []
    if run.status in ("failed", "crashed"):
        notes.append(f"the run {run.status}" + (f": {run.error}" if run.error else "") + "; findings cover its recorded steps.")
    notes += [f"{gap}; findings cover the stored steps." for gap in run.gaps]  # the store could not be written
    if not UPDATE_STATS & set(run.stats):
        notes.append("update_ratio was not recorded (watch(..., update_ratio=False)): stalled_updates and the "
                     "tiny-update check were skipped.")
    clip = run.scalar("clip_factor") if "clip_factor" in run.scalars else None
    acted = float(np.mean(clip[np.isfinite(clip)] < 0.999)) if clip is not None and np.isfinite(clip).any() else 0.0
    if acted > 0:  # a loop that never clips is not told so on every diagnosis
        notes.append(f"clipping acted on {acted:.0%} of the recorded steps (clip_factor < 1: the gradient norm at the "
                     f"optimizer step over the norm when the gradients were complete).")
    if Stat.OUT_GRAD_NORM.value not in run.stats:
        notes.append("out_grad_norm was not recorded: the depth profile of the gradient could not be read.")
    return notes
