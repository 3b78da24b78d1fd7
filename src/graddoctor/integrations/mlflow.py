"""MLflow mirror: a graddoctor run's statistics, findings and guard actions in an MLflow run.

`mlflow` (the `mlflow-skinny` package is enough) is imported when the mirror starts, never at import.
Everything goes through an explicit `MlflowClient` and run id, never the fluent API's active run:
the writer thread that logs is not the thread that started the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from ..errors import GradDoctorError
from .mirror import Metric, RunInfo, TrackerMirror, metric_key

MAX_BATCH = 1000  # MLflow's log_batch takes at most 1,000 metrics per call
STATUS = {"finished": "FINISHED", "failed": "FAILED"}  # anything else (a crashed run exported later): KILLED


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise GradDoctorError("the MLflow mirror needs mlflow: pip install 'graddoctor[mlflow]'.") from None
    return mlflow


class MlflowMirror(TrackerMirror):
    """Mirror a run into MLflow: per-layer statistics as metrics `graddoctor/<stat>/<layer>`.

    Example:
        >>> mirror = MlflowMirror(tracking_uri="sqlite:///mlflow.db", experiment="deep-sigmoid")  # doctest: +SKIP
        >>> with graddoctor.watch(model, opt, store="runs.db", mirror=mirror) as run:            # doctest: +SKIP
        ...     ...

    Metric steps are graddoctor's (optimizer) steps and timestamps the recorded wall times.
    Scalars from `run.log` become `graddoctor/<key>`; the findings are the artifacts
    `graddoctor/findings.json` and `graddoctor/diagnosis.txt` plus the tags `graddoctor/findings`
    and `graddoctor/worst`; guard actions the metric `graddoctor/guard/<action>` (1 at their step)
    and, at the end, `graddoctor/guard_actions.json`.

    Args:
        tracking_uri: where MLflow keeps runs (default: MLflow's own, `MLFLOW_TRACKING_URI`).
        experiment: experiment name (created if missing; default: MLflow's default experiment).
        run_id: log into this existing MLflow run, and leave it open at the end. Without it, an MLflow
            run active in the thread that calls `watch` is used the same way; otherwise a new run
            named after the graddoctor run is created, and ended with the run's status.
        run_name: name of the run created (default: the graddoctor run's name).
    """

    def __init__(self, *, tracking_uri: str | None = None, experiment: str | None = None,
                 run_id: str | None = None, run_name: str | None = None) -> None:
        self.tracking_uri, self.experiment, self.run_id, self.run_name = tracking_uri, experiment, run_id, run_name
        self.client: Any = None
        self.owned = False  # True when this mirror created the MLflow run (and so ends it)
        self.actions: list[dict[str, Any]] = []

    def start(self, info: RunInfo) -> None:
        mlflow = _mlflow()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        if self.run_id is None:
            active = mlflow.active_run() if self.tracking_uri is None and self.experiment is None else None
            if active is not None:
                self.run_id = active.info.run_id
            else:
                self.run_id = self._create_run(info)
                self.owned = True
        tags = {"graddoctor/run": info.name, "graddoctor/store": info.store, "graddoctor/run_id": str(info.run_id)}
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        watch = info.config.get("watch") if isinstance(info.config.get("watch"), dict) else {}
        if watch and self.owned:  # params are write-once in MLflow: only on a run of our own
            from mlflow.entities import Param

            params = [Param(f"graddoctor/{k}", json.dumps(v)[:500]) for k, v in sorted(watch.items())]
            self.client.log_batch(self.run_id, params=params[:100])

    def _create_run(self, info: RunInfo) -> str:
        experiment_id = "0"
        if self.experiment is not None:
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(self.experiment)
        return self.client.create_run(experiment_id, run_name=self.run_name or info.name).info.run_id

    def log_metrics(self, metrics: Sequence[Metric]) -> None:
        from mlflow.entities import Metric as MlflowMetric

        rows = [MlflowMetric(m.key, m.value, int(m.wall_time * 1000), m.step) for m in metrics]
        for i in range(0, len(rows), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=rows[i:i + MAX_BATCH])

    def log_findings(self, findings: list[dict[str, Any]], text: str) -> None:
        self.client.log_dict(self.run_id, {"findings": findings}, "graddoctor/findings.json")
        self.client.log_text(self.run_id, text, "graddoctor/diagnosis.txt")
        kinds = ", ".join(f"{f['kind']}({f['severity']})" for f in findings) or "none"
        self.client.set_tag(self.run_id, "graddoctor/findings", kinds[:5000])
        order = ["info", "warning", "error"]
        worst = max((f["severity"] for f in findings), key=order.index, default="none")
        self.client.set_tag(self.run_id, "graddoctor/worst", worst)

    def log_actions(self, actions: Sequence[dict[str, Any]]) -> None:
        now = time.time()
        self.actions += [dict(a) for a in actions]
        self.log_metrics([Metric(metric_key(f"guard/{a['action']}"), int(a["step"]), float(a.get("wall_time", now)), 1.0)
                          for a in actions])

    def finish(self, status: str) -> None:
        if self.client is None:
            return
        if self.actions:
            self.client.log_dict(self.run_id, {"actions": self.actions}, "graddoctor/guard_actions.json")
        if self.owned:
            self.client.set_terminated(self.run_id, status=STATUS.get(status, "KILLED"))
