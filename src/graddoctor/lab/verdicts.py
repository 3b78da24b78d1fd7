"""The verdict table a study prints: its claims (id, verdict, claim, key numbers) or its plain table."""

from __future__ import annotations

import shutil
import textwrap
from typing import Any

from .._text import format_table
from ..errors import ConfigError

VERDICTS = ("supported", "refuted", "qualified")


def claim(id: str, text: str, verdict: str, rule: str, numbers: dict[str, Any], summary: str = "") -> dict[str, Any]:
    """One entry of results.json's "claims" list; `summary` is the one-line measurement the table shows."""
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"id": id, "claim": text, "verdict": verdict, "rule": rule, "summary": summary, "numbers": numbers}


def render(analysis: dict[str, Any]) -> str:
    """The study's table as text: the claims' verdicts if it has claims, else its "table", then its notes."""
    lines = [f"{analysis.get('title', analysis.get('study', 'study'))}"]
    if analysis.get("claims"):
        lines.append(_claims_table(analysis["claims"]))
    elif analysis.get("table"):
        table = analysis["table"]
        lines.append(format_table(list(table["header"]), [[str(c) for c in row] for row in table["rows"]]))
    lines += [f"  {note}" for note in analysis.get("notes", [])]
    if analysis.get("report"):
        lines.append(f"report: {analysis['report']}")
    lines.append(f"results: {analysis.get('store', '').rsplit('/', 1)[0]}/results.json  ({analysis.get('seconds', '?')} s)")
    return "\n".join(lines)


def _claims_table(claims: list[dict[str, Any]]) -> str:
    """claim, verdict, measurement: the measurement wrapped to the terminal under its own column."""
    width = max(60, shutil.get_terminal_size(fallback=(100, 24)).columns - 1)
    id_w = max(len("claim"), *(len(c["id"]) for c in claims))
    verdict_w = max(len("verdict"), *(len(c["verdict"]) for c in claims))
    indent = " " * (id_w + verdict_w + 4)
    lines = [f"{'claim':<{id_w}}  {'verdict':<{verdict_w}}  measured (mean ± std over seeds)",
             f"{'-' * id_w}  {'-' * verdict_w}  {'-' * (width - len(indent))}"]
    for c in claims:
        first = f"{c['id']:<{id_w}}  {c['verdict']:<{verdict_w}}  "
        text = (c.get("summary", "") or "-").replace(" ± ", "\xa0±\xa0")  # keep "0.71 ± 0.01" on one line
        lines += [line.replace("\xa0", " ") for line in textwrap.wrap(
            text, width, initial_indent=first, subsequent_indent=indent, break_on_hyphens=False)]
    return "\n".join(lines)
