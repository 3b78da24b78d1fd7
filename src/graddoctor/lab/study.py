"""Studies: a sweep, its analysis and its report, declared as data. The registry of named studies.

How a study plugs in
--------------------
Each module `graddoctor/lab/studies/<name>.py` exposes one module-level `STUDY = Study(...)`;
`graddoctor.lab.registry.studies()` imports every module of that package and registers each `STUDY` under `STUDY.name`
(the CLI name, e.g. "seed-claims", "depth-sweep"). Nothing else to register. A TOML file becomes
a Study through `graddoctor.lab.toml_study.load_toml` (same fields).

The three functions a Study holds (module-level functions, so runs stay picklable):

    runs(settings: Settings) -> list[RunSpec]
        The sweep: every run, named uniquely (names are the resume keys: a run already finished
        in the store with the same config is not trained again) and tagged for the analysis,
        e.g. run_spec(f"c2/deep/s{seed}", net=..., train=..., seed=seed, claim="C2", variant="deep").
        Use `settings.seeds` seeds (range(settings.seeds)); `settings.quick` asks for a run
        of under a minute on 2 cores (fewer steps, smaller depths), same structure.

    analyse(results: Results, settings: Settings) -> dict
        The numbers, computed from the store only (`results.select(**tags)`, `results.metric(key,
        **tags)`, `record.view()` for per-layer statistics; `mean_spread` for mean ± spread over
        seeds). The dict returned IS the content of results.json (JSON-able: no NaN, use None).
        Keys the runner understands:
          "claims": [{"id", "claim", "verdict", "rule", "numbers": {...}}, ...]   verdict table
              (verdict is "supported" / "refuted" / "qualified", computed by the rule)
          "table": {"header": [str, ...], "rows": [[cell, ...], ...]}   printed when no "claims"
          "notes": [str, ...]                                           printed after the table
        The runner adds "study", "title", "quick", "seeds", "seconds" (the training's wall time, from the
        store: the same when a finished study is re-analysed), "run_seconds" (the runs' training times
        summed), "analysis_seconds", "store" and "report".

    report(page: HtmlPage, analysis: dict, results: Results) -> None   (optional)
        Adds the study's sections and figures to the HTML report:
        `with page.section(title, anchor=...):` then page.paragraph(text),
        page.table(header, rows), page.figure(matplotlib_figure, caption=...). Figures come from
        `graddoctor.reporting.figures` (gradient_flow, heatmap, histograms, ... each takes ax=) or
        matplotlib directly (import it inside the function). Without `report`, the runner writes
        one section with the "table".

The runner (`graddoctor.lab.runner.run_study`, CLI `graddoctor lab run NAME`) trains the sweep
into DIR/store.db, calls analyse, writes DIR/results.json, builds DIR/report.html and prints the
verdict table (or the table).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .results import Results
from ..train.spec import RunSpec


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a study is run: `quick` (under a minute, for tests and a first look) and the number of seeds."""

    quick: bool = False
    seeds: int = 3


@dataclasses.dataclass(frozen=True)
class Study:
    """A named study: its sweep (`runs`), its numbers (`analyse`) and its report sections (`report`)."""

    name: str                                                   # CLI name: lowercase words joined by "-"
    title: str                                                  # one line, the report's heading
    summary: str                                                # a paragraph: what it measures, against what paper
    runs: Callable[[Settings], list[RunSpec]]
    analyse: Callable[[Results, Settings], dict[str, Any]]
    report: Callable[[Any, dict[str, Any], Results], None] | None = None
    min_seeds: int = 1                                          # refuse --seeds below this
