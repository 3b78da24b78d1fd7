"""A study's HTML report: its summary, its verdict table, then the study's own sections (or its table)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .results import Results


def write_study_report(run: Any, results: Results) -> None:
    """Write `run.report_path` for a `StudyRun` (graddoctor.lab.runner)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from ..reporting.html import HtmlPage
    except ImportError:
        raise ConfigError("the lab's HTML report needs matplotlib: pip install 'graddoctor[report]' "
                          "(results.json is written without it).") from None
    analysis = run.analysis
    quick = " (quick)" if analysis.get("quick") else ""
    page = HtmlPage(title=f"{run.study.title}{quick}",
                    subtitle=f"graddoctor lab run {run.study.name}: {analysis['seeds']} seeds, {analysis['seconds']} s")
    with page.section("What this study measures", anchor="summary"):
        page.paragraph(run.study.summary)
    if analysis.get("claims"):
        with page.section("Verdicts", anchor="verdicts"):
            rows = [[c["id"], c["verdict"], c["claim"], c.get("summary", "")] for c in analysis["claims"]]
            page.table(["claim", "verdict", "the claim", "measured (mean ± std over seeds)"], rows, text_columns=(2, 3))
    if run.study.report is not None:
        run.study.report(page, analysis, results)
    elif analysis.get("table"):
        with page.section("Results", anchor="results"):
            page.table(analysis["table"]["header"], analysis["table"]["rows"])
    if analysis.get("notes"):
        with page.section("Notes", anchor="notes"):
            page.bullets(analysis["notes"])
    with page.section("Reproduce", anchor="reproduce"):
        flags = " --quick" if analysis.get("quick") else ""
        page.preformatted(f"graddoctor lab run {run.study.name}{flags} --seeds {analysis['seeds']} --out {run.out}")
    page.write(run.report_path)
