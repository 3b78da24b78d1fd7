"""The paper studies (issue 7, item 4) run quick and reproduce the papers' qualitative results."""

from __future__ import annotations

import importlib
import math

import pytest

from graddoctor.lab.study import Settings
from graddoctor.lab.sweep import run_sweep

QUICK = Settings(quick=True, seeds=2)


def quick_run(module: str, tmp_path):
    """(analysis, results, study) of a quick run of `graddoctor.lab.studies.<module>`, two seeds, one process."""
    study = importlib.import_module(f"graddoctor.lab.studies.{module}").STUDY
    results = run_sweep(study.runs(QUICK), tmp_path / "store.db", jobs=1, progress=False)
    return study.analyse(results, QUICK), results, study


def report_html(study, analysis, results) -> str:
    from graddoctor.report.html import HtmlPage

    page = HtmlPage(study.title)
    study.report(page, analysis, results)
    return page.render()


def test_bn_explosion_grows_by_pi_over_pi_minus_1_and_residual_removes_it(tmp_path):
    analysis, results, study = quick_run("bn_explosion", tmp_path)
    s = analysis["summary"]
    assert abs(s["vs_theory"]) < 0.05                       # finite-batch theory (batch 64: 1.493)
    assert abs(s["plain_growth"] / (math.pi / (math.pi - 1)) - 1) < 0.06
    for row in analysis["batch_sweep"]:
        assert row["growth"]["mean"] == pytest.approx(row["theory"], rel=0.06)
    assert s["residual_late_growth"] < 1.15 < s["plain_growth"]
    assert s["residual_ratio"] < s["plain_ratio"] / 2
    html = report_html(study, analysis, results)
    assert html.count("<figure>") == 3 and "pi/(pi-1)" in html
