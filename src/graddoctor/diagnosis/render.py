"""Plain text of a Diagnosis: findings with evidence, cause and ranked remedies, then a per-layer table.

Formats only (no colour, safe to pipe); numbers and tables through graddoctor._text, shared with
reporting/ (which diagnosis/ may not import). Reads a `findings.Diagnosis` by its attributes and
never imports findings: findings imports this module for `Diagnosis.__str__`.
"""

from __future__ import annotations

import textwrap
from typing import Any, Callable, Sequence

from .._text import fmt as num
from .._text import format_table

WIDTH = 100
SUMMARY_COLUMNS = (
    ("out_grad_start", "out_grad@start"), ("out_grad_end", "out_grad@end"), ("grad_norm_end", "grad_norm"),
    ("update_ratio_end", "upd_ratio"), ("dead_frac_end", "dead"), ("saturated_frac_end", "sat"),
    ("nonfinite_steps", "nonfinite"),
)


def layer_list(layers: Sequence[str], limit: int = 8) -> str:
    """'0, 2, 4' or, when long, the first few, an ellipsis and the last two, with the count."""
    shown = [repr(name) for name in layers]
    if len(shown) > limit:
        shown = shown[: limit - 2] + ["\u2026"] + shown[-2:]
        return ", ".join(shown) + f" ({len(layers)} layers)"
    return ", ".join(shown)


def render_finding(k: int, f: Any, compare: CompareLine | None = None) -> list[str]:
    steps = "" if f.step_range is None else (
        f"  step {f.step_range[0]}" if f.step_range[0] == f.step_range[1] else f"  steps {f.step_range[0]}-{f.step_range[1]}")
    head = f"{k}. {str(f.severity).upper()}  {f.kind}{steps}"
    lines = [head]
    if f.layers:
        lines += _wrap(f"layers: {layer_list(f.layers)}", "   ")
    evidence = ", ".join(f"{key}={num(value)}" for key, value in f.evidence.items())
    lines += _wrap(f"evidence: {evidence}", "   ")
    lines += _wrap(f"cause: {f.cause}", "   ")
    if f.remedies:
        lines.append("   try, in this order:")
        for rank, advice in enumerate(f.remedies, 1):
            lines += _wrap(f"{rank}. {advice.title} [{advice.id}]: {advice.why}", "     ", hanging="        ")
    line = (compare or compare_call)(f.comparable) if f.comparable else None
    if line:
        lines.append(f"   compare them on your model: {line}")
    return lines


# How a finding's comparable remedy ids read: a function of the ids (Finding.comparable).
CompareLine = Callable[[Sequence[str]], str]


def compare_call(ids: Sequence[str]) -> str:
    """The `graddoctor.compare` call that tries these remedies on the user's model and data."""
    optimizer = ', optimizer="sgd"' if "change_optimizer" in ids else ""
    return f"graddoctor.compare(model_factory, data, remedies={list(ids)!r}{optimizer}, seeds=3)"


def render_text(d: Any, compare: CompareLine | None = None) -> str:
    """The diagnosis as plain text; `compare` writes each finding's comparable remedies (default
    `compare_call`, the CLI passes its command line)."""
    run = d.run
    title = (f"graddoctor diagnosis of run {run.get('name')!r} ({run.get('status')}): {run.get('n_steps')} recorded "
             f"steps, {run.get('n_layers')} layers")
    lines = [title]
    lines += [f"note: {note}" for note in d.notes]
    lines.append("")
    if not d.findings:
        lines += ["No finding: gradients, activations and updates look healthy by every rule.", ""]
    for k, finding in enumerate(d.findings, 1):
        lines += render_finding(k, finding, compare)
        lines.append("")
    lines.append("per layer (input side first; out_grad = ||dL/d output||; medians over the first/last finite steps;"
                 " nonfinite = steps with NaN/Inf):")
    lines.append(layer_table(d.layers))
    if d.expected is not None:
        lines += ["", *expected_table(d.expected)]
    if d.guard_actions:
        lines += ["", *guard_lines(d.guard_actions)]
    return "\n".join(lines).rstrip() + "\n"


def expected_table(c: Any) -> list[str]:
    """Predicted vs measured factor of ||dL/dh||^2 per Linear/Conv layer (theory at init)."""
    title = (f"theory at initialization (mean-field, wide limit: {c.phase or 'phase unknown'}) vs measured at step "
             f"{c.step}:\nfactor = ||dL/dh||^2 at a weight layer's output over the same at the next one toward the output")
    rows = [[r.name or "(root)", r.type, num(r.predicted_factor), num(r.measured_factor)] for r in c.layers]
    rows.append(["geometric mean", "", num(c.predicted_mean), num(c.measured_mean)])
    return [title, format_table(["layer", "type", "predicted", "measured"], rows, right=[False, False, True, True])]


def guard_lines(actions: Sequence[Any], limit: int = 20) -> list[str]:
    """What a guard did while training, one line per action (dicts or store.guard_actions.GuardAction)."""
    rows = [a if isinstance(a, dict) else a.to_dict() for a in actions]
    counts: dict[str, int] = {}
    for a in rows:
        counts[a["action"]] = counts.get(a["action"], 0) + 1
    lines = ["guard actions while training (" + ", ".join(f"{n} {k}" for k, n in counts.items()) + "):"]
    for a in rows[:limit]:
        where = f" in {a['layer']!r}" if a.get("layer") else ""
        lines += _wrap(f"step {a['step']}: {a['action']} [{a['trigger']}{where}] {a['reason']}", "  ")
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more (graddoctor diagnose --json lists them all)")
    return lines


def layer_table(layers: Sequence[dict[str, Any]]) -> str:
    headers = ["layer", "type", *(h for _, h in SUMMARY_COLUMNS), "findings"]
    rows = [
        [layer["name"] or "(root)", layer["type"], *(num(layer.get(key)) for key, _ in SUMMARY_COLUMNS),
         ",".join(layer.get("findings", ())) or "-"]
        for layer in layers
    ]
    return format_table(headers, rows, right=[False, False] + [True] * len(SUMMARY_COLUMNS) + [False])


def _wrap(text: str, indent: str, hanging: str | None = None) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=hanging or indent + "  ",
                         break_on_hyphens=False) or [indent]
