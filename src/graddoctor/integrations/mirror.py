"""Tracker mirrors: what a run records, sent on to an experiment tracker (MLflow, Weights & Biases).

The store stays the record; a mirror is a copy. `MirrorFeed` is fed the rows the store writer has
just committed, in the writer's thread (never in the training step), turns them into metrics
named `graddoctor/<stat>/<layer>` and hands them to each `Mirror`. When the run ends it adds the
findings. `export_to_mirror` sends a finished run the same way. Imports no tracker: each tracker's
module (`integrations.mlflow`, `integrations.wandb`) imports its package when a mirror starts.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..errors import GradDoctorError
from ..store.segments import width_for

PREFIX = "graddoctor"
ROOT_LAYER = "model"  # the root module's layer name is "", which no tracker takes as a key part


class Metric(NamedTuple):
    key: str          # graddoctor/<stat>/<layer>, or graddoctor/<run.log key> for scalars
    step: int         # graddoctor's step: the optimizer step
    wall_time: float  # unix seconds, as recorded
    value: float      # NaN and +-Inf are sent as they are: a tracker that hides them would hide the problem


class RunInfo(NamedTuple):
    name: str
    run_id: int
    store: str
    config: dict[str, Any]  # the run's stored config (graddoctor's watch settings, the user's config)


@runtime_checkable
class Mirror(Protocol):
    """What a tracker mirror implements. Every call but `start` comes from the store writer's thread
    (or, for `log_findings` and `finish`, from the thread that closes the run)."""

    def start(self, info: RunInfo) -> None: ...

    def log_metrics(self, metrics: Sequence[Metric]) -> None: ...

    def log_findings(self, findings: list[dict[str, Any]], text: str) -> None: ...

    def log_actions(self, actions: Sequence[dict[str, Any]]) -> None: ...

    def finish(self, status: str) -> None: ...


def metric_key(stat: str, layer: str | None = None) -> str:
    """`graddoctor/<stat>/<layer>` (`graddoctor/<key>` for a scalar); the root module is `model`."""
    if layer is None:
        return f"{PREFIX}/{stat}"
    return f"{PREFIX}/{stat}/{layer or ROOT_LAYER}"


class TrackerMirror:
    """The base of every tracker mirror: what `watch(..., mirror=)` and the callbacks' `mirror=` take.

    Subclasses implement the `Mirror` methods they need (the defaults do nothing); `open_feed` is
    what the run calls once it exists in the store (probes/session.py's `mirror_feeds`).
    """

    def open_feed(self, *, name: str, run_id: int, store: str, config: dict[str, Any],
                  names: dict[int, str]) -> MirrorFeed:
        """Start this mirror for the run and return the feed the store writer sends its batches to."""
        return MirrorFeed([self], RunInfo(name, run_id, store, config), names)

    def start(self, info: RunInfo) -> None:
        """The run exists (called in the thread that calls `watch`)."""

    def log_metrics(self, metrics: Sequence[Metric]) -> None:
        """A committed batch's statistics and scalars (the store writer's thread)."""

    def log_findings(self, findings: list[dict[str, Any]], text: str) -> None:
        """The run's findings, once it has ended."""

    def log_actions(self, actions: Sequence[dict[str, Any]]) -> None:
        """Guard actions (warn, skip, stop...), each a dict with at least `step`, `action`, `reason`."""

    def finish(self, status: str) -> None:
        """The run has ended with `status`."""


def batch_metrics(batch: dict[str, Any], names: dict[int, str]) -> list[Metric]:
    """The metrics in one store-writer batch; `names` maps layer positions to names (updated here).

    A batch's statistics are `store.segments.StepStats` blocks (one per recorded step: values and a
    recorded mask, statistic by layer position); only the recorded cells become metrics, each rounded
    as the store keeps it (float32 unless it would not survive: `store.segments.width_for`).
    """
    for row in batch.get("layers") or ():
        names[row[0]] = row[1]  # (position, name, ...)
    wall = {step: t for step, t in batch.get("steps") or ()}
    metrics = []
    for block in batch.get("stats") or ():
        t = wall.get(block.step, 0.0)
        for k, stat in enumerate(block.names):
            cells = block.recorded[k].nonzero()[0]
            kept = block.values[k, cells]
            if width_for(stat, kept) == 4:
                kept = kept.astype(np.float32)
            metrics += [Metric(metric_key(stat, names.get(int(pos), f"layer{pos}")), block.step, t, float(v))
                        for pos, v in zip(cells, kept)]
    metrics += [Metric(metric_key(key), step, wall.get(step, 0.0), float(value)) for step, key, value in batch.get("scalars") or ()]
    return metrics


def view_metrics(view: Any) -> list[Metric]:
    """Every recorded statistic and logged scalar of a `RunView`, as metrics (for a finished run)."""
    metrics = []
    for stat in view.stats:
        matrix, recorded = view.stat_matrix(stat), view.recorded(stat)
        for i, layer in enumerate(view.layers):
            key = metric_key(stat, layer)
            metrics += [Metric(key, int(s), float(view.wall_time[j]), float(matrix[i, j]))
                        for j, s in enumerate(view.steps) if recorded[i, j]]
    for name in view.scalars:
        values, recorded = view.scalar(name), view.scalar_recorded(name)
        metrics += [Metric(metric_key(name), int(s), float(view.wall_time[j]), float(values[j]))
                    for j, s in enumerate(view.steps) if recorded[j]]
    return sorted(metrics, key=lambda m: m.step)  # trackers with a step counter want steps in order


def findings_of(view: Any) -> tuple[list[dict[str, Any]], str]:
    """The run's findings (the Findings JSON list) and the diagnosis as text; none before a recorded step."""
    from ..diagnosis import diagnose

    if len(view.steps) == 0:
        return [], f"run {view.name!r}: no recorded step"
    diagnosis = diagnose(view)
    return [f.to_dict() for f in diagnosis.findings], str(diagnosis)


def action_dict(row: Sequence[Any]) -> dict[str, Any]:
    """A `guard_actions` row of a writer batch (step, action, trigger, layer, reason, evidence JSON) as a dict."""
    step, action, trigger, layer, reason, evidence = row
    return {"step": int(step), "action": action, "trigger": trigger, "layer": layer, "reason": reason,
            "evidence": json.loads(evidence)}


class MirrorFeed:
    """A live run's mirrors: fed by the store writer after each commit, closed with the run.

    A mirror that fails (a tracking server gone, a full disk) is warned about once and dropped;
    the store keeps recording, and `graddoctor export --format mlflow|wandb` can send the run later.
    """

    def __init__(self, mirrors: Iterable[Mirror], info: RunInfo, names: dict[int, str] | None = None) -> None:
        self.info = info
        self.names = dict(names or {})
        self.mirrors: list[Mirror] = []
        self.failed: list[str] = []
        for mirror in mirrors:
            mirror.start(info)  # in the caller's thread: a tracker's own run context lives there
            self.mirrors.append(mirror)

    def write(self, batch: dict[str, Any]) -> None:
        """The rows the store writer has just committed (its thread)."""
        metrics = batch_metrics(batch, self.names)
        if metrics:
            self._each("log_metrics", metrics)
        self.log_actions([action_dict(row) for row in batch.get("guard_actions") or ()])

    def log_actions(self, actions: Sequence[dict[str, Any]]) -> None:
        """Guard actions (warn, skip, stop...), each a dict with at least `step`, `action`, `reason`.

        The guard's actions (`watch(..., guard=)`) arrive here from `write`, in the batch that stores them.
        """
        if actions:
            self._each("log_actions", list(actions))

    def close(self, view: Any, status: str) -> None:
        """The run has ended: its findings, then each mirror's finish."""
        if self.mirrors:
            try:
                findings, text = findings_of(view)
            except Exception as err:  # a diagnosis that fails must not lose the mirrored run
                findings, text = [], f"graddoctor could not diagnose the run: {type(err).__name__}: {err}"
            self._each("log_findings", findings, text)
        self._each("finish", status)

    def _each(self, method: str, *args: Any) -> None:
        for mirror in list(self.mirrors):
            try:
                getattr(mirror, method)(*args)
            except Exception as err:
                self.mirrors.remove(mirror)
                self.failed.append(f"{type(mirror).__name__}: {type(err).__name__}: {err}")
                warnings.warn(
                    f"graddoctor: the {type(mirror).__name__} mirror of run {self.info.name!r} failed in {method} "
                    f"({type(err).__name__}: {err}) and is stopped; the run store {self.info.store!r} still records "
                    f"everything: send it later with `graddoctor export {self.info.store} --name {self.info.name} "
                    f"--format mlflow|wandb`.",
                    RuntimeWarning, stacklevel=2,
                )


def export_to_mirror(view: Any, mirror: Mirror) -> dict[str, int]:
    """Send a recorded run (a `RunView`) to a mirror: statistics, scalars, findings; returns the counts."""
    config = view.config if isinstance(view.config, dict) else {}
    try:
        mirror.start(RunInfo(view.name, view.run_id, view.path, config))
    except GradDoctorError:
        raise
    except Exception as err:  # the tracker's own refusal (a bad URI, a store MLflow will not open): one paragraph
        raise GradDoctorError(
            f"could not start the {type(mirror).__name__} for run {view.name!r}: {type(err).__name__}: {err}"
        ) from err
    metrics = view_metrics(view)
    status = "failed"
    try:
        mirror.log_metrics(metrics)
        findings, text = findings_of(view)
        mirror.log_findings(findings, text)
        status = view.status
    finally:
        mirror.finish(status)
    return {"metrics": len(metrics), "findings": len(findings), "nonfinite": sum(not math.isfinite(m.value) for m in metrics)}
