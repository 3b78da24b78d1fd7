"""`make demo`'s job: the seed-claims study, --quick, with the verdicts asserted and a report section per claim.

One quick run (module fixture, through `python -m graddoctor.cli.demo --quick`'s main) serves every test;
the CLI test then reruns the study into the same directory, where every run is already finished.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from graddoctor.cli import demo
from graddoctor.cli import main

EXPECTED = {"C1": "supported", "C2": "supported", "C3": "qualified", "C4": "refuted", "C5": "supported",
            "C6": "qualified", "C7": "qualified", "C8": "supported"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed-claims")
    t0 = time.perf_counter()
    assert demo.main(["--quick", "--out", str(out)]) == 0
    return out, time.perf_counter() - t0


def test_quick_verdicts_are_the_measured_ones(quick):
    out, _ = quick
    results = json.loads((out / "results.json").read_text())
    assert {c["id"]: c["verdict"] for c in results["claims"]} == EXPECTED


def test_every_claim_carries_its_rule_and_numbers(quick):
    out, _ = quick
    results = json.loads((out / "results.json").read_text())
    for c in results["claims"]:
        assert set(c) >= {"id", "claim", "verdict", "rule", "numbers"} and c["rule"] and c["numbers"]
    assert results["seeds"] >= 3
    c6 = next(c for c in results["claims"] if c["id"] == "C6")
    assert "f(x) = x for x >= 0; f(x) = 0.01*x for x < 0" in c6["numbers"]["formulas"]["correct"]
    c1 = next(c for c in results["claims"] if c["id"] == "C1")
    assert c1["numbers"]["per_layer_factor_measured"]["mean"] == pytest.approx(c1["numbers"]["per_layer_factor_theory_chi1"], rel=0.3)


def test_report_has_a_section_and_a_figure_per_claim(quick):
    out, _ = quick
    html = (out / "report.html").read_text()
    for cid in EXPECTED:
        section = re.search(rf'<section id="{cid.lower()}">(.*?)</section>', html, re.S)
        assert section and ("<img" in section.group(1) or "<svg" in section.group(1)), cid


def test_cli_resumes_the_finished_study_and_prints_the_verdicts(quick, capsys):
    out, seconds = quick
    t0 = time.perf_counter()
    assert main(["lab", "run", "seed-claims", "--quick", "--out", str(out), "--no-report"]) == 0
    printed = capsys.readouterr().out
    for cid, verdict in EXPECTED.items():
        assert re.search(rf"^{cid}\s+{verdict}\s", printed, re.M), cid
    assert time.perf_counter() - t0 < seconds  # nothing trained again
