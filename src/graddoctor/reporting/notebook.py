"""Rich display in Jupyter: Diagnosis, RunView, Comparison and a study's results as HTML.

A study's results (`lab.runner.StudyRun`) have a `_repr_html_` that calls `study_html`. The other
three live in layers below this one (store, diagnosis, remedies.compare), which never import
reporting (README: Layout); `register` hands IPython their HTML formatters instead, and
`import graddoctor` calls it when IPython is running, so they display as HTML in a notebook
with nothing to do.

Built with the report's `HtmlPage`, so every user-controlled string (layer and run names, finding
text, config values) is escaped in the same one place. The fragment's CSS is scoped to
`.graddoctor` (the notebook's own page must not be restyled). Figures are inlined when matplotlib
is importable and left out, with a note, when it is not: displaying a run never needs an extra.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .._text import fmt
from .html import HtmlPage, escape

CSS = """<style>
.graddoctor{font-size:13px;line-height:1.4}.graddoctor h2{font-size:1.2em;margin:.6em 0 .3em}
.graddoctor h3{font-size:1.05em;margin:.5em 0 .2em}.graddoctor table{border-collapse:collapse;margin:.4em 0}
.graddoctor th,.graddoctor td{padding:.15em .5em;border-bottom:1px solid #e3e7eb;text-align:right}
.graddoctor td:first-child,.graddoctor th:first-child,.graddoctor td.text,.graddoctor th.text{text-align:left}
.graddoctor .note{color:#7a5b00;background:#fff8e1;padding:.2em .5em;border-left:3px solid #f0c000}
.graddoctor .finding{border-left:4px solid #999;padding:.2em .7em;margin:.5em 0}
.graddoctor .finding.error{border-color:#c62828}.graddoctor .finding.warning{border-color:#ef8f00}
.graddoctor .finding.info{border-color:#2460a7}.graddoctor .sev{font-weight:600;text-transform:uppercase}
.graddoctor figure{margin:.5em 0}.graddoctor figure img{max-width:100%}
</style>"""


def fragment(page: HtmlPage, title: str) -> str:
    """The page's sections as one `<div class="graddoctor">` (no document, no script)."""
    return f'{CSS}<div class="graddoctor"><h2>{escape(title)}</h2>{page.body()}</div>'


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def diagnosis_html(d: Any) -> str:
    """Findings (evidence, cause, ranked remedies) and the per-layer summary."""
    from .render import findings_section, layer_section

    page = HtmlPage(title="diagnosis")
    findings_section(page, d)
    layer_section(page, d)
    run = d.run
    return fragment(page, f"graddoctor diagnosis of run {run.get('name', '?')!r} ({run.get('n_steps', 0)} recorded steps)")


def run_html(view: Any) -> str:
    """A run: what was recorded, the per-layer table at the last step, and its gradient flow figure."""
    page = HtmlPage(title="run")
    span = f"steps {int(view.steps[0])} to {int(view.steps[-1])}" if len(view.steps) else "no recorded step yet"
    page.paragraph(f"{view.status}; {len(view.steps)} recorded steps ({span}); {len(view.layers)} layers; "
                   f"store {view.path}")
    if len(view.steps):
        stats = [s for s in ("out_grad_norm", "grad_norm", "update_ratio", "update_ratio_est", "act_std", "dead_frac") if s in view.stats]
        rows = [[layer or "(root)", *(view.row(layer).get(s) for s in stats)] for layer in view.layers]
        with page.section(f"Per layer at step {int(view.steps[-1])}"):
            page.table(["layer", *stats], rows)
        figure_or_note(page, view)
    return fragment(page, f"graddoctor run {view.name!r}")


def figure_or_note(page: HtmlPage, view: Any) -> None:
    if not has_matplotlib():
        page.note("figures need matplotlib: pip install 'graddoctor[report]'.")
        return
    if "out_grad_norm" not in view.stats and "grad_norm" not in view.stats:
        page.note("not shown: no gradient statistic was recorded.")
        return
    from .figures import gradient_flow

    page.figure(gradient_flow(view).figure, caption="gradient flow: per-layer norms, input side first")


def comparison_html(c: Any) -> str:
    """The remedies table: mean ± std over seeds and each variant's verdict against the original."""
    from ..remedies.compare._text import _COLUMNS, mean_std

    columns = [col for col in _COLUMNS if not (col[0] == "test_accuracy" and c.task != "classification")]
    rows = [[v.name, v.verdict or "(baseline)", *(mean_std(v.metric(k), s, seeds=c.seeds) for k, _, s in columns)]
            for v in c.variants]
    page = HtmlPage(title="comparison")
    page.paragraph(f"{c.dataset}; {c.steps} steps, {c.seeds} seed(s) per variant, {c.optimizer} lr={fmt(c.lr)} "
                   f"({c.seconds:.1f} s)")
    page.table(["variant", "verdict", *(h for _, h, _ in columns)], rows)
    page.paragraph(f"mean ± std over seeds; verdict rule: {c.to_dict()['verdict_rule']}.")
    return fragment(page, "graddoctor compare")


def study_html(analysis: dict[str, Any]) -> str:
    """A study's verdicts (or its plain table), its notes, and where its files are."""
    page = HtmlPage(title="study")
    if analysis.get("claims"):
        rows = [[c["id"], c["verdict"], c.get("claim", ""), c.get("summary", "") or "-"] for c in analysis["claims"]]
        page.table(["claim", "verdict", "the claim", "measured (mean ± std over seeds)"], rows, text_columns=[2, 3])
    elif analysis.get("table"):
        table = analysis["table"]
        page.table(list(table["header"]), [[str(c) for c in row] for row in table["rows"]])
    for note in analysis.get("notes", []):
        page.note(note)
    where = [f"store {analysis.get('store')}", f"{analysis.get('seconds', '?')} s"]
    if analysis.get("report"):
        where.insert(0, f"report {analysis['report']}")
    page.paragraph("; ".join(where))
    return fragment(page, str(analysis.get("title", analysis.get("study", "study"))))


def register(shell: Any = None) -> bool:
    """Show RunView, Diagnosis and Comparison as HTML in IPython `shell` (default: the running one).

    Returns False, doing nothing, outside IPython. Called by `import graddoctor`; call it yourself
    only if graddoctor was imported before the IPython shell started.
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
        if shell is None:
            return False
    from ..diagnosis.findings import Diagnosis
    from ..remedies.compare._compare import Comparison
    from ..store.view import RunView

    html = shell.display_formatter.formatters["text/html"]
    for cls, render in ((RunView, run_html), (Diagnosis, diagnosis_html), (Comparison, comparison_html)):
        html.for_type(cls, render)
    return True
