"""`seed-claims`: every claim C1-C8 of the seed article (shared/seed/CLAIMS.md), measured, with a verdict from a rule.

The default data is scikit-learn's digits (1,797 real 8x8 images, fixed 75/25 split). Every
trained run has the same budget (300 minibatches of 64; --quick: 120); the numbers are mean ±
standard deviation over the seeds (3 by default). Each claim's rule is written next to it (in
graddoctor.lab.claims) and printed in results.json and the report.
"""

from __future__ import annotations

from typing import Any

from ..claims.batchnorm import C7
from ..claims.dead import C4, C5, C6
from ..claims.exploding import C8
from ..claims.relu import C3
from ..claims.vanishing import C1, C2
from ..results import Results
from ..study import Settings, Study
from ..verdicts import claim

CLAIMS = (C1, C2, C3, C4, C5, C6, C7, C8)


def runs(settings: Settings) -> list:
    """Every claim's runs, each once (C4-C6 share the dead-unit runs; C7 reuses C2's deep sigmoid runs)."""
    seen: dict[str, Any] = {}
    for c in CLAIMS:
        for spec in c.runs(settings):
            seen.setdefault(spec.name, spec)
    return list(seen.values())


def analyse(results: Results, settings: Settings) -> dict[str, Any]:
    entries, figures = [], {}
    for c in CLAIMS:
        verdict, numbers, summary, figure = c.judge(results, settings)
        entries.append(claim(c.id, c.text, verdict, c.rule, numbers, summary))
        figures[c.id] = figure
    return {"claims": entries, "figures": figures, "dataset": "digits (scikit-learn, 1,797 8x8 images, 75/25 split)"}


def report(page: Any, analysis: dict[str, Any], results: Results) -> None:
    by_id = {c.id: c for c in CLAIMS}
    for entry in analysis["claims"]:
        c = by_id[entry["id"]]
        with page.section(f"{c.id}: {c.text}", anchor=c.id.lower()):
            page.paragraph(f"Verdict: {entry['verdict']}.")
            page.paragraph(f"Measured: {entry['summary']}.")
            page.paragraph(f"Rule: {entry['rule']}.")
            fig, caption = c.figure(analysis["figures"][c.id])
            page.figure(fig, caption=caption)


STUDY = Study(
    name="seed-claims",
    title="The seed article's claims about vanishing gradients, measured",
    summary=("Each claim C1-C8 of the seed article becomes a small seeded experiment on scikit-learn's digits: per-layer "
             "gradients at initialisation, training under a fixed budget, dead units, BatchNorm and clipping. The verdict "
             "(supported / refuted / qualified) of each follows from its numbers by the rule printed beside it."),
    runs=runs,
    analyse=analyse,
    report=report,
    min_seeds=3,
)
