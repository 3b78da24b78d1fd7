"""Notebook display: the HTML of a run, a diagnosis, a comparison and a study's results, escaped as
the report is; and examples/diagnose.ipynb executed in a real kernel (nbclient + ipykernel), its outputs checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.reporting import notebook
from reportdata import EVIL

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def evil_run():
    """A small sigmoid net whose first layer and run name are HTML that must show as text."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module(EVIL, nn.Linear(8, 8))
    for k in range(4):
        model.add_module(f"act{k}", nn.Sigmoid())
        model.add_module(f"fc{k}", nn.Linear(8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, name=f"run {EVIL}") as run:
        for _ in range(3):
            loss = model(torch.randn(16, 8)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return graddoctor.load(run)


def assert_escaped(html: str) -> None:
    assert EVIL not in html and "<img src=x" not in html and "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_run_displays_its_layers_escaped_and_its_figure_inline(evil_run):
    pytest.importorskip("matplotlib")
    html = notebook.run_html(evil_run)
    assert_escaped(html)
    assert html.count('<div class="graddoctor">') == 1 and "<html" not in html  # a fragment, not a document
    assert "Per layer at step 2" in html and "data:image/" in html


def test_without_matplotlib_a_run_says_so_instead_of_a_figure(evil_run, monkeypatch):
    monkeypatch.setattr(notebook, "has_matplotlib", lambda: False)
    html = notebook.run_html(evil_run)
    assert "figures need matplotlib" in html and "data:image/" not in html


def test_a_diagnosis_displays_its_findings_escaped(evil_run):
    d = graddoctor.diagnose(evil_run)
    html = notebook.diagnosis_html(d)
    assert_escaped(html)
    assert "Per layer" in html and f"{len(d.findings)}" in html
    for f in d.findings:
        assert f'<b>{f.kind}</b>' in html


def test_a_study_displays_its_verdicts_escaped():
    from graddoctor.lab.runner import StudyRun

    analysis = {"title": f"study {EVIL}", "store": "x/store.db", "seconds": 1.5, "notes": [EVIL],
                "claims": [{"id": "C1", "claim": EVIL, "verdict": "supported", "rule": "r", "summary": "0.9 ± 0.1"}]}
    html = StudyRun(study=None, analysis=analysis, out=Path("x"))._repr_html_()
    assert_escaped(html)
    assert "<td>supported</td>" in html and "0.9 ± 0.1" in html


def test_register_gives_ipython_the_html_of_runs_diagnoses_and_comparisons(evil_run):
    from graddoctor.diagnosis.findings import Diagnosis
    from graddoctor.remedies.compare._compare import Comparison
    from graddoctor.store.view import RunView

    class Formatter:
        def __init__(self):
            self.types = {}

        def for_type(self, cls, func):
            self.types[cls] = func

    class Shell:
        def __init__(self):
            self.display_formatter = type("F", (), {"formatters": {"text/html": Formatter()}})()

    shell = Shell()
    assert notebook.register(shell)
    types = shell.display_formatter.formatters["text/html"].types
    assert set(types) == {RunView, Diagnosis, Comparison}
    assert_escaped(types[RunView](evil_run))
    assert notebook.register() is False  # no IPython shell running in the test process


@pytest.mark.slow
def test_the_example_notebook_runs_and_shows_the_diagnosis_and_the_remedies(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("sklearn")
    # The kernel inherits the environment: PYTHONPATH (this checkout's src/) and one OpenMP thread
    # (small tensors on a shared 2-core machine: two threads mostly wait on each other).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook_file = nbformat.read(ROOT / "examples" / "diagnose.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in notebook_file.cells if c.cell_type == "code")  # stored unexecuted
    nbclient.NotebookClient(notebook_file, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
                            ).execute()
    outputs = [o for c in notebook_file.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if o.output_type == "execute_result"]
    run_html, diagnosis_html, comparison_html = html
    assert "graddoctor run &#x27;deep-sigmoid&#x27;" in run_html and "data:image/" in run_html
    assert "vanishing_gradient" in diagnosis_html
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "vanishing_gradient" in printed
    for variant in ("original", "relu", "batch_norm"):
        assert f"<td>{variant}</td>" in comparison_html
    assert "(baseline)" in comparison_html and ("helps" in comparison_html or "no_change" in comparison_html)


def test_notebook_display_modules_import_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, graddoctor.reporting.notebook; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip() == "False"
