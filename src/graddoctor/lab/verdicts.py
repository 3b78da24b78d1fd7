"""The verdict table a study prints: its claims (id, verdict, claim, key numbers) or its plain table."""

from __future__ import annotations

from typing import Any

from .._text import format_table

VERDICTS = ("supported", "refuted", "qualified")


def claim(id: str, text: str, verdict: str, rule: str, numbers: dict[str, Any], summary: str = "") -> dict[str, Any]:
    """One entry of results.json's "claims" list; `summary` is the one-line measurement the table shows."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"id": id, "claim": text, "verdict": verdict, "rule": rule, "summary": summary, "numbers": numbers}


def render(analysis: dict[str, Any]) -> str:
    """The study's table as text: the claims' verdicts if it has claims, else its "table", then its notes."""
    lines = [f"{analysis.get('title', analysis.get('study', 'study'))}"]
    if analysis.get("claims"):
        rows = [[c["id"], c["verdict"], c.get("summary", "")] for c in analysis["claims"]]
        lines.append(format_table(["claim", "verdict", "measured (mean ± std over seeds)"], rows, right=[False] * 3))
    elif analysis.get("table"):
        table = analysis["table"]
        lines.append(format_table(list(table["header"]), [[str(c) for c in row] for row in table["rows"]]))
    lines += [f"  {note}" for note in analysis.get("notes", [])]
    if analysis.get("report"):
        lines.append(f"report: {analysis['report']}")
    lines.append(f"results: {analysis.get('store', '').rsplit('/', 1)[0]}/results.json  ({analysis.get('seconds', '?')} s)")
    return "\n".join(lines)
