"""Weights & Biases mirror: a graddoctor run's statistics, findings and guard actions in a W&B run.

`wandb` is imported when the mirror starts, never at import. Offline mode (`WANDB_MODE=offline` or
`mode="offline"`) needs no account and no network; `wandb sync` uploads such a run later.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import Any

from ..errors import GradDoctorError
from .mirror import PREFIX, Metric, RunInfo, TrackerMirror, metric_key

STEP_KEY = f"{PREFIX}/step"  # the x-axis of every graddoctor/* chart: W&B's own _step stays the user's


def _wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise GradDoctorError("the Weights & Biases mirror needs wandb: pip install 'graddoctor[wandb]'.") from None
    return wandb


class WandbMirror(TrackerMirror):
    """Mirror a run into Weights & Biases: per-layer statistics as `graddoctor/<stat>/<layer>`.

    Example:
        >>> mirror = WandbMirror(project="deep-sigmoid", mode="offline")                      # doctest: +SKIP
        >>> with graddoctor.watch(model, opt, store="runs.db", mirror=mirror) as run:          # doctest: +SKIP
        ...     ...

    Every `graddoctor/*` metric is plotted against `graddoctor/step` (graddoctor's optimizer
    step), declared with `define_metric`, so the mirror never moves W&B's own step counter that
    the user's `wandb.log` calls advance. Scalars from `run.log` become `graddoctor/<key>`; the
    findings a table `graddoctor/findings` and the summary keys `graddoctor/findings_count`,
    `graddoctor/worst`, `graddoctor/diagnosis`; guard actions a table `graddoctor/guard_actions`
    and `graddoctor/guard/<action>` = 1 at their step. NaN and Inf are logged as they are.

    Args:
        run: log into this W&B run (`wandb.init(...)`'s result) and leave it open. Without it, a run
            active in the process (`wandb.run`) is used the same way; otherwise the mirror calls
            `wandb.init(project=..., name=<the graddoctor run>, config=<its config>, **init)` and
            finishes that run with the graddoctor run's status.
        project: W&B project of the run created.
        **init: more `wandb.init` arguments for the run created (`mode="offline"`, `dir=...`, `entity=...`).
    """

    def __init__(self, run: Any = None, *, project: str | None = None, **init: Any) -> None:
        self.run, self.project, self.init = run, project, init
        self.owned = False
        self.actions: list[dict[str, Any]] = []

    def start(self, info: RunInfo) -> None:
        wandb = _wandb()
        if self.run is None and wandb.run is not None:
            self.run = wandb.run
        if self.run is None:
            kwargs = {"project": self.project, "name": info.name, "config": {"graddoctor": info.config}, **self.init}
            self.run = wandb.init(**kwargs)
            self.owned = True
        self.run.define_metric(STEP_KEY)
        self.run.define_metric(f"{PREFIX}/*", step_metric=STEP_KEY)
        self.run.summary[f"{PREFIX}/run"] = info.name
        self.run.summary[f"{PREFIX}/store"] = info.store

    def log_metrics(self, metrics: Sequence[Metric]) -> None:
        for step, group in groupby(sorted(metrics, key=lambda m: m.step), key=lambda m: m.step):
            row: dict[str, Any] = {m.key: m.value for m in group}
            row[STEP_KEY] = step
            self.run.log(row)

    def log_findings(self, findings: list[dict[str, Any]], text: str) -> None:
        wandb = _wandb()
        columns = ["kind", "severity", "layers", "step_range", "cause", "remedies"]
        data = [[f["kind"], f["severity"], ", ".join(f["layers"]), str(f["step_range"]), f["cause"],
                 ", ".join(r["id"] for r in f["remedies"])] for f in findings]
        self.run.log({f"{PREFIX}/findings": wandb.Table(columns=columns, data=data)})
        order = ["info", "warning", "error"]
        self.run.summary[f"{PREFIX}/findings_count"] = len(findings)
        self.run.summary[f"{PREFIX}/worst"] = max((f["severity"] for f in findings), key=order.index, default="none")
        self.run.summary[f"{PREFIX}/diagnosis"] = text

    def log_actions(self, actions: Sequence[dict[str, Any]]) -> None:
        self.actions += [dict(a) for a in actions]
        for a in actions:
            self.run.log({metric_key(f"guard/{a['action']}"): 1.0, STEP_KEY: int(a["step"])})

    def finish(self, status: str) -> None:
        if self.run is None:
            return
        if self.actions:
            wandb = _wandb()
            rows = [[int(a["step"]), str(a["action"]), str(a.get("reason", ""))] for a in self.actions]
            self.run.log({f"{PREFIX}/guard_actions": wandb.Table(columns=["step", "action", "reason"], data=rows)})
        if self.owned:
            self.run.finish(exit_code=0 if status == "finished" else 1)
