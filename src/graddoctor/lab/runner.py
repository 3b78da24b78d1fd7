"""Run a study: its sweep into DIR/store.db, its analysis into DIR/results.json, its report into DIR/report.html."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from .._outputs import check_output, make_folder, write_atomic
from ..errors import ConfigError
from .registry import get_study
from .study import Settings, Study
from ..train.pool import check_backend
from .sweep import run_sweep, training_seconds


@dataclasses.dataclass(frozen=True)
class StudyRun:
    """What `run_study` produced: the analysis (results.json's content) and where the files are."""

    study: Study
    analysis: dict[str, Any]
    out: Path

    @property
    def results_path(self) -> Path:
        return self.out / "results.json"

    @property
    def report_path(self) -> Path:
        return self.out / "report.html"

    def __str__(self) -> str:
        from .verdicts import render

        return render(self.analysis)

    def _repr_html_(self) -> str:
        """Jupyter's rich display (reporting/notebook.py; imported here, on display only)."""
        from ..reporting.notebook import study_html

        return study_html(self.analysis)


def run_study(study: Study | str, *, quick: bool = False, seeds: int | None = None, jobs: int | None = None,
              out: str | os.PathLike[str] | None = None, progress: bool | None = None, report: bool = True,
              backend: str = "process", ray_address: str | None = None) -> StudyRun:
    """Train, analyse and report a study (a `Study`, a registered name or a .toml path).

    Args:
        quick: the study's quick variant (under a minute on 2 cores).
        seeds: seeds per configuration (default 3; at least the study's `min_seeds`).
        jobs: worker processes (default: all cores).
        out: directory for store.db, results.json and report.html (default: lab_runs/<name>[-quick]).
        progress: a progress bar on stderr (default: when stderr is a terminal).
        report: write the HTML report (needs matplotlib: the [report] extra).
        backend: "process" (worker processes here) or "ray" (one Ray task per run: the [ray] extra;
            the runs' numbers are the same, docs/trackers.md).
        ray_address: with backend="ray", the cluster ("auto", "ray://head:10001"); None starts a
            local Ray instance for the study.
    """
    source = study if isinstance(study, str) and study.endswith(".toml") else None  # an input: never an output
    study = get_study(study) if isinstance(study, str) else study
    seeds = 3 if seeds is None else seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < max(1, study.min_seeds):
        raise ConfigError(f"study {study.name!r} needs --seeds >= {max(1, study.min_seeds)}, got {seeds!r}.")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"jobs must be a positive integer, got {jobs!r}.")
    check_backend(backend, ray_address)
    settings = Settings(quick=quick, seeds=seeds)
    out = Path(out) if out is not None else Path("lab_runs") / (study.name + ("-quick" if quick else ""))
    make_folder(check_output(out, inputs=[source], folder=True, what="--out",
                             make_parents=True))
    specs = study.runs(settings)
    results = run_sweep(specs, out / "store.db", jobs=jobs,
                        progress=sys.stderr.isatty() if progress is None else progress, backend=backend,
                        ray_address=ray_address)
    t0 = time.perf_counter()
    analysis = dict(study.analyse(results, settings))
    # "seconds" is the training's wall time (kept when a finished study is re-analysed), "analysis_seconds" this analysis'
    analysis |= {"study": study.name, "title": study.title, "quick": quick, "seeds": seeds,
                 **training_seconds(str(out / "store.db"), [s.name for s in specs]),
                 "analysis_seconds": round(time.perf_counter() - t0, 1), "store": str(out / "store.db"),
                 "report": str(out / "report.html") if report else None}
    run = StudyRun(study, _clean(analysis), out)
    with write_atomic(run.results_path, what="results.json") as f:
        f.write(json.dumps(run.analysis, indent=2) + "\n")
    if report:
        from .report import write_study_report

        write_study_report(run, results)
    return run


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None, tuples lists, numpy scalars floats."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
