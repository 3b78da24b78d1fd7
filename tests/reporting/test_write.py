"""write_report and `graddoctor report`: sections in order, notes for what is missing, comparisons, size budget."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

import graddoctor
from graddoctor.cli import main
from graddoctor.reporting import write_report
from reportdata import EVIL, EVIL_SCRIPT


def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"><h2>', html)


def test_single_run_report_has_findings_first_then_layers_figures_config(store, run, tmp_path):
    out = write_report(store, tmp_path / "r.html", names=[run.name])
    html = out.read_text()
    assert section_ids(html) == ["findings", "layers", "figures", "config"]
    assert "vanishing_gradient" in html                    # the sigmoid MLP's finding
    assert html.count("<figure>") == 7                     # every planned figure was recorded
    assert "env: torch" in html and "env: device" in html  # environment: torch version, device
    assert "<img src=x" not in html and "<script" not in html.lower()
    for text in (EVIL, EVIL_SCRIPT):                       # layer name, run name, config value, logged key
        assert text.replace("<", "&lt;").replace(">", "&gt;") in html


def test_names_inside_svg_figures_are_text_not_markup(store, run, tmp_path):
    """matplotlib writes names into the SVGs' <text>: each SVG still parses and shows them, with no element of theirs."""
    import xml.etree.ElementTree as ET

    html = write_report(store, tmp_path / "r.html", names=[run.name]).read_text()
    svgs = [base64.b64decode(data) for data in re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)]
    assert len(svgs) >= 5
    texts = []
    for svg in svgs:
        root = ET.fromstring(svg)  # an unescaped '<' in a label would not parse (and the <img> would show broken)
        assert not [e.tag for e in root.iter() if e.tag.rsplit("}", 1)[-1] in ("script", "img", "foreignObject")]
        texts += ["".join(e.itertext()) for e in root.iter() if e.tag.endswith("}text")]
    assert EVIL in texts                                          # the layer name, as a tick or legend label
    assert any(t.endswith(": " + EVIL_SCRIPT + "run") for t in texts)  # the run name, in the titles


def test_missing_data_is_said_not_skipped(fake, tmp_path):
    html = write_report(fake, tmp_path / "r.html").read_text()
    assert "not shown: no histogram was recorded: watch(..., hist_every=N)." in html
    assert html.count("<figure>") == 5
    assert "no configuration was stored" not in html  # fake runs carry an optimizer config


def test_comparison_page_of_several_runs(store, run, tmp_path):
    out = write_report(store, tmp_path / "c.html", names=[run.name, "relu"])
    html = out.read_text()
    assert section_ids(html) == ["summary", "overlays", "run-1", "run-2"]
    assert "graddoctor comparison:" in html and "relu" in html
    assert html.count("<figure>") == 3 + 2 * 3  # loss and two profiles overlaid, then 3 figures per run


def test_bad_inputs_say_what_to_pass(fake, store, tmp_path):
    with pytest.raises(graddoctor.errors.ConfigError, match="store path"):
        write_report(42, tmp_path / "r.html")
    with pytest.raises(graddoctor.errors.ConfigError, match="names= selects runs inside a store path"):
        write_report(fake, tmp_path / "r.html", names=["x"])
    with pytest.raises(graddoctor.errors.StoreError, match="no run named 'nope'"):
        write_report(store, tmp_path / "r.html", names=["nope"])


def test_cli_report_writes_the_file(store, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(store), "--name", "relu", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err and "graddoctor report: relu" in out.read_text()
    assert main(["report", str(store), "--name", "relu", "--name", "relu", "-o", str(out)]) == 0
    assert "graddoctor comparison: relu vs relu #2" in out.read_text()  # same name twice: told apart
    assert main(["report", str(tmp_path / "missing.db"), "-o", str(out)]) == 2


def long_run(steps: int, depth: int):
    from fakes import fake_run, mlp_layers, profile_stats

    stats = profile_stats(depth, 0.5, steps=steps)
    rng = np.random.default_rng(0)
    for per_layer in stats.values():  # noisy series: a worst case for vector output
        for name in per_layer:
            per_layer[name] = per_layer[name] * np.exp(0.1 * rng.standard_normal(steps))
    return fake_run(mlp_layers(depth), stats, steps=steps, scalars={"loss": np.exp(-np.arange(steps) / steps)})


def test_size_budget_of_a_long_run(tmp_path):
    """docs/report.md's budget: 1,000 steps x 20 layers (39 modules) stays under 1 MB; 4x the steps adds little."""
    sizes = {}
    for steps in (1000, 4000):
        out = write_report(long_run(steps, 20), tmp_path / f"r{steps}.html")
        sizes[steps] = out.stat().st_size
    assert sizes[1000] < 1_000_000
    assert sizes[4000] < 1_000_000


def test_figures_of_a_long_run_draw_bounded_data():
    """What makes a long run's report slow is the data drawn: per-layer lines and heatmap columns stay
    bounded whatever the run's length (the time itself is measured by benchmarks/store_scale.py)."""
    from matplotlib.collections import QuadMesh

    from graddoctor.reporting._figures_time import MAX_LINE_STEPS
    from graddoctor.reporting.figures import MAX_HEATMAP_STEPS
    from graddoctor.reporting.model import figure_plan

    for spec in figure_plan(long_run(4000, 20)):
        if spec.draw is None or spec.title == "Loss":  # the loss is one line of every step
            continue
        fig = spec.draw().figure
        for ax in fig.axes:
            for line in ax.get_lines():
                assert line.get_gid() == "key" or len(line.get_xdata()) <= MAX_LINE_STEPS, spec.title
            for mesh in (c for c in ax.collections if isinstance(c, QuadMesh)):
                assert mesh.get_coordinates().shape[1] <= MAX_HEATMAP_STEPS + 1, spec.title


def test_a_run_with_no_step_yet_still_gets_a_report(tmp_path):
    from fakes import fake_run, mlp_layers

    empty = fake_run(mlp_layers(2), {}, steps=0)
    html = write_report(empty, tmp_path / "r.html").read_text()
    assert "no step recorded yet: nothing to diagnose" in html and "look healthy" not in html
    assert html.count("not shown: no step recorded yet.") == 7 and "<figure>" not in html


def test_comparison_profiles_are_over_weight_layers(run):
    from graddoctor.reporting.write import _profile

    x, values = _profile(run, "out_grad_norm")
    weights = [i.name for i in run.layer_info if i.kind == "param"]
    assert list(x) == list(range(len(weights)))
    assert list(values) == [run.stat("out_grad_norm", name)[-1] for name in weights]


def test_progress_wraps_the_long_loops_of_one_run_and_of_a_comparison(store, run, tmp_path):
    seen = []

    def progress(items, total, label):
        seen.append((label, total))
        return items

    write_report(store, tmp_path / "r.html", names=[run.name], progress=progress)
    assert seen == [("reading runs", 1), ("drawing figures", 7)]
    seen.clear()
    write_report(store, tmp_path / "c.html", names=[run.name, "relu"], progress=progress)
    assert seen == [("reading runs", 2), ("diagnosing", 2), ("drawing runs", 2)]


def test_comparison_summary_shows_the_last_logged_loss_not_a_gap_as_nan(fake):
    import dataclasses

    from graddoctor.reporting.write import _last

    loss = np.linspace(2, 0.1, 20)
    loss[-1] = np.nan
    gap = dataclasses.replace(fake, _scalars={"loss": loss}, _scalar_recorded={"loss": ~np.isnan(loss)})
    assert _last(gap, "loss") == pytest.approx(loss[-2])
    diverged = dataclasses.replace(gap, _scalar_recorded={"loss": np.ones(20, dtype=bool)})  # a logged NaN shows
    assert np.isnan(_last(diverged, "loss"))
