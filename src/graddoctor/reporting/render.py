"""A RunReport as HtmlPage sections: findings first, then the per-layer table, figures, configuration.

Every user-controlled string (layer and run names, config values, logged keys, finding text) goes
through HtmlPage's escaping; `page.raw` only wraps it in this module's fixed markup.
"""

from __future__ import annotations

import json
from typing import Any

from .._text import fmt
from ..diagnosis import Diagnosis, Finding
from ..diagnosis.render import SUMMARY_COLUMNS, compare_call
from .html import HtmlPage, escape
from .model import RunReport


def findings_section(page: HtmlPage, d: Diagnosis, *, anchor: str = "findings") -> None:
    """The diagnosis: notes, then each finding with its evidence, cause and ranked remedies."""
    n = len(d.findings)
    with page.section(f"Findings ({n})" if n else "Findings: none", anchor=anchor):
        for note in d.notes:
            page.note(note)
        if not d.findings and d.run.get("n_steps"):
            page.paragraph("No finding: gradients, activations and updates look healthy by every rule.")
        for k, f in enumerate(d.findings, 1):
            finding_block(page, k, f)


def finding_block(page: HtmlPage, k: int, f: Finding) -> None:
    sev = escape(f.severity)
    steps = "" if f.step_range is None else (
        f"step {f.step_range[0]}" if f.step_range[0] == f.step_range[1] else f"steps {f.step_range[0]}-{f.step_range[1]}")
    page.raw(f'<div class="finding {sev}"><p><span class="sev {sev}">{sev}</span> {k}. <b>{escape(f.kind)}</b> '
             f"{escape(steps)}</p>")
    if f.layers:
        page.paragraph("layers: " + ", ".join(f.layers))
    if f.evidence:
        page.paragraph("evidence: " + ", ".join(f"{key}={fmt(value)}" for key, value in f.evidence.items()))
    page.paragraph(f"cause: {f.cause}")
    if f.remedies:
        items = "".join(f"<li><b>{escape(a.title)}</b> [{escape(a.id)}]: {escape(a.why)}</li>" for a in f.remedies)
        page.raw(f"<p>try, in this order:</p><ol>{items}</ol>")
    if f.comparable:
        page.paragraph("compare them on your model:")
        page.preformatted(compare_call(f.comparable))
    page.raw("</div>")


def guard_section(page: HtmlPage, d: Diagnosis, *, anchor: str = "guard") -> None:
    """What a guard did while training: one row per action (warn, skip, stop, callback)."""
    with page.section(f"Guard actions while training ({len(d.guard_actions)})", anchor=anchor):
        rows = [[a["step"], a["action"], a["trigger"], a.get("layer") or "(model)", a["reason"]] for a in d.guard_actions]
        page.table(["step", "action", "trigger", "layer", "reason"], rows, text_columns=(1, 2, 3, 4))


def layer_section(page: HtmlPage, d: Diagnosis, *, anchor: str = "layers") -> None:
    """Per-layer summary (input side first) and, when a prediction was given, theory vs measured."""
    with page.section("Per layer", anchor=anchor):
        page.paragraph("input side first; out_grad = ||dL/d output||; medians over the first/last finite steps; "
                       "nonfinite = steps with NaN/Inf.")
        headers = ["layer", "type", "params", *(h for _, h in SUMMARY_COLUMNS), "findings"]
        rows = [[layer["name"] or "(root)", layer["type"], layer.get("n_params"),
                 *(layer.get(key) for key, _ in SUMMARY_COLUMNS), ", ".join(layer.get("findings", ())) or "-"]
                for layer in d.layers]
        page.table(headers, rows, text_columns=[len(headers) - 1])
        if d.expected is not None:
            c = d.expected
            page.heading(f"Theory at initialization ({c.phase or 'phase unknown'}) vs measured at step {c.step}")
            rows = [[r.name or "(root)", r.type, r.predicted_factor, r.measured_factor] for r in c.layers]
            rows.append(["geometric mean", "", c.predicted_mean, c.measured_mean])
            page.table(["layer", "type", "predicted factor", "measured factor"], rows)


def figures_section(page: HtmlPage, report: RunReport, *, anchor: str = "figures", only: set[str] | None = None,
                    progress: Any = None) -> None:
    """Each planned figure drawn, or a note saying what was not recorded; `progress` wraps the loop (a bar)."""
    specs = [spec for spec in report.figures if only is None or spec.title in only]
    step = progress or (lambda items, total, label: items)
    with page.section("Figures", anchor=anchor):
        for spec in step(specs, len(specs), "drawing figures"):
            page.heading(spec.title)
            if spec.draw is None:
                page.note(f"not shown: {spec.missing}.")
                continue
            page.figure(spec.draw().figure, caption=spec.caption)


def config_section(page: HtmlPage, report: RunReport, *, anchor: str = "config") -> None:
    """Where the numbers came from: run, environment (torch version, device), configuration as JSON."""
    run = report.run
    with page.section("Configuration and environment", anchor=anchor):
        span = f" ({int(run.steps[0])} to {int(run.steps[-1])})" if len(run.steps) else ""
        rows: list[list[Any]] = [
            ["run", run.name], ["status", run.status], ["store", run.path], ["recorded steps", f"{len(run.steps)}{span}"],
            ["layers", len(run.layer_info)], ["statistics", ", ".join(run.stats) or "-"],
            ["logged", ", ".join(run.scalars) or "-"],
        ]
        if run.error:
            rows.append(["error", run.error])
        if run.first_nonfinite:
            nf = run.first_nonfinite
            where = f" ({nf['pass']} pass)" if nf.get("pass") else ""
            rows.append(["first non-finite", f"step {nf.get('step')}, layer {nf.get('layer')!r}, {nf.get('stat')}{where}"])
        rows += [[f"env: {key}", _text(value)] for key, value in sorted(run.env.items())]
        page.table(["", "value"], rows, text_columns=[1])
        page.heading("Configuration")
        if run.config:
            page.preformatted(json.dumps(run.config, indent=2, sort_keys=True, default=str))
        else:
            page.note("no configuration was stored with this run.")


def run_sections(page: HtmlPage, report: RunReport, *, prefix: str = "", progress: Any = None) -> None:
    """The whole single-run report: findings, per-layer table, figures, configuration."""
    findings_section(page, report.diagnosis, anchor=prefix + "findings")
    if report.diagnosis.guard_actions:
        guard_section(page, report.diagnosis, anchor=prefix + "guard")
    layer_section(page, report.diagnosis, anchor=prefix + "layers")
    figures_section(page, report, anchor=prefix + "figures", progress=progress)
    config_section(page, report, anchor=prefix + "config")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
