"""`write_report`: one run's report, or a comparison page of several runs, as one self-contained HTML file.

Size budget (held by tests/reporting/test_write.py, measured in docs/report.md): a figure with a raster or more than 20,000
drawn points is a PNG, others SVG; the heatmap draws at most 500 step columns (a longer run is
subsampled evenly). A one-run report therefore stays under 2 MB however long the run, and opens
in well under a second.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .._outputs import check_output
from ..diagnosis.families import depth_layers
from ..errors import ConfigError
from ..store.sqlite import RunStore
from ..store.view import RunView, load, read_run
from . import figures
from .html import HtmlPage
from .model import RunReport, build
from .render import figures_section, findings_section, run_sections

Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]


def write_report(path_or_runs: Any, output: str | os.PathLike[str], names: Sequence[str] | None = None, *,
                 prediction: Any = None, progress: Progress | None = None) -> Path:
    """Write the HTML report of one run, or a comparison page of several, and return its path.

    Example:
        >>> write_report("runs.db", "report.html")                          # doctest: +SKIP
        >>> write_report("runs.db", "cmp.html", names=["sigmoid", "relu"])  # doctest: +SKIP

    Args:
        path_or_runs: a store path (with `names`: those runs, else the latest run), a `RunView`,
            a live run from `graddoctor.watch`, or a list of them (a comparison).
        output: the .html file to write (parent folders are created).
        names: run names inside the store; two or more give a comparison page.
        prediction: a `graddoctor.predict(model)` result for a single run's model (theory overlay).
        progress: wraps the loop over runs, e.g. a terminal progress bar: (items, total, label) -> items.

    Raises:
        StoreError: the store cannot be read, or has no run of that name.
        ConfigError: nothing to report, or names given with runs rather than a path.
    """
    step = progress or (lambda items, total, label: items)
    check_output(output, inputs=_input_paths(path_or_runs), make_parents=True)
    sources = _sources(path_or_runs, names)
    runs = [src() for src in step(sources, len(sources), "reading runs")]
    if len(runs) == 1:
        report = build(runs[0], prediction=prediction)
        page = HtmlPage(title=f"graddoctor report: {runs[0].name}", subtitle=_subtitle(runs[0]))
        run_sections(page, report, progress=step)  # drawing the figures is the long part of one run
        return page.write(output)
    reports = [build(run) for run in step(runs, len(runs), "diagnosing")]
    page = comparison_page(reports, progress=step)
    return page.write(output)


def _sources(path_or_runs: Any, names: Sequence[str] | None) -> list[Callable[[], RunView]]:
    if isinstance(path_or_runs, (str, os.PathLike)):
        if not names:
            return [lambda: load(path_or_runs)]
        return [lambda n=n: _read(path_or_runs, n) for n in names]
    if names:
        raise ConfigError("write_report(): names= selects runs inside a store path; with RunViews or live runs, "
                          "pass only those runs.")
    items = list(path_or_runs) if isinstance(path_or_runs, (list, tuple)) else [path_or_runs]
    if not items:
        raise ConfigError("write_report() got an empty list of runs: give a store path or at least one run.")
    for item in items:
        if not isinstance(item, RunView) and not callable(getattr(item, "view", None)):
            raise ConfigError(f"write_report() takes a store path, a RunView (graddoctor.load) or a run from "
                              f"graddoctor.watch, or a list of them; got {type(item).__name__}.")
    return [lambda item=item: load(item) if not isinstance(item, RunView) else item for item in items]


def _input_paths(path_or_runs: Any) -> list[Any]:
    """The store files a report reads: the path itself, or where each RunView came from."""
    if isinstance(path_or_runs, (str, os.PathLike)):
        return [path_or_runs]
    items = list(path_or_runs) if isinstance(path_or_runs, (list, tuple)) else [path_or_runs]
    return [item.path for item in items if isinstance(getattr(item, "path", None), str)]


def _read(path: Any, name: str) -> RunView:
    store = RunStore(path, readonly=True)
    try:
        return read_run(store, store.find_run(name))
    finally:
        store.close()


def _subtitle(run: RunView) -> str:
    span = f", steps {int(run.steps[0])}-{int(run.steps[-1])}" if len(run.steps) else ""
    return f"{run.status}, {len(run.steps)} recorded steps{span}, {len(run.layer_info)} layers; store {run.path}"


def comparison_page(reports: list[RunReport], *, progress: Progress | None = None) -> HtmlPage:
    """Runs side by side: a summary table and overlaid curves, then each run's findings and figures."""
    step = progress or (lambda items, total, label: items)
    labels = _labels([r.run.name for r in reports])
    page = HtmlPage(title="graddoctor comparison: " + " vs ".join(labels),
                    subtitle=f"{len(reports)} runs; each run's own report follows the overlays")
    with page.section("Summary", anchor="summary"):
        rows = [[label, r.run.status, len(r.run.steps), len(r.run.layer_info), str(r.diagnosis.worst or "none"),
                 ", ".join(sorted(r.diagnosis.kinds)) or "-", _last(r.run, "loss")] for label, r in zip(labels, reports)]
        page.table(["run", "status", "steps", "layers", "worst", "findings", "last loss"], rows, text_columns=[5])
    with page.section("Overlays", anchor="overlays"):
        _overlays(page, dict(zip(labels, (r.run for r in reports))))
    for k, (label, report) in enumerate(step(list(zip(labels, reports)), len(reports), "drawing runs")):
        with page.section(f"Run {label}", anchor=f"run-{k + 1}"):
            findings_section(page, report.diagnosis, anchor=f"run-{k + 1}-findings")
            figures_section(page, report, anchor=f"run-{k + 1}-figures", only={"Gradient flow", "Back-propagated "
                            "gradient, layer x step", "Update ratio"})
    return page


def _overlays(page: HtmlPage, runs: dict[str, RunView]) -> None:
    with_loss = {label: run for label, run in runs.items() if "loss" in run.scalars}
    if with_loss:
        page.figure(figures.overlay(figures.curves_of(with_loss, "loss"), ylabel="loss", title="loss").figure,
                    caption="the logged loss of each run.")
    else:
        page.note("not shown: no run logged a loss (run.log(loss=loss)).")
    for stat, what in (("out_grad_norm", "||dL/d output||"), ("grad_norm", "||dL/dW||")):
        profiles = {label: _profile(run, stat) for label, run in runs.items() if stat in run.stats}
        if profiles:
            ax = figures.overlay(profiles, xlabel="weight layer, input side first (position)", ylabel=what + " (log)",
                                 title=f"{what} per layer at each run's last step", logy=True)
            page.figure(ax.figure, caption=f"{what} per layer at the last recorded step of each run, log scale.")
        else:
            page.note(f"not shown: no run recorded {stat}.")


def _profile(run: RunView, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """`stat` at the last step over the depth profile's layers (weight and embedding roles) that
    recorded it, input side first; over every layer when the run has none of those."""
    weights = np.zeros(len(run.layer_info), dtype=bool)
    weights[depth_layers(run)] = True
    rows = run.recorded(stat)[:, -1] & (weights if weights.any() else True)
    values = run.stat_matrix(stat)[rows, -1]
    return np.arange(len(values)), values


def _last(run: RunView, key: str) -> float | None:
    """The last logged value of `key` (a step where it was not logged is not a NaN loss)."""
    if key not in run.scalars:
        return None
    logged = run.scalar(key)[run.scalar_recorded(key)]
    return float(logged[-1]) if len(logged) else None


def _labels(names: list[str]) -> list[str]:
    """Run names, made unique with #2, #3 when a store holds several runs of one name."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return out
