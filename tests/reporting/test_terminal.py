"""Terminal output: rich tables in colour on a terminal, the unchanged plain text when piped; light imports."""

from __future__ import annotations

import io
import subprocess
import sys

import graddoctor
from graddoctor.cli import main
from graddoctor.cli._commands import compare_line
from graddoctor.diagnosis.render import render_text
from graddoctor.reporting import terminal
from graddoctor.reporting.text import layer_table


def recording_console(width: int = 100):
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=width, record=True)


def test_piped_output_is_the_plain_text(store, run, capsys):
    assert main(["show", str(store), "--name", run.name]) == 0
    assert capsys.readouterr().out == layer_table(run) + "\n"
    # this SGD-0.5 sigmoid run spikes (loss 1.3 -> 21 at step 3, updates as large as the weights): an error finding
    expected = 1 if graddoctor.diagnose(run).reaches("error") else 0
    assert main(["diagnose", str(store), "--name", run.name]) == expected
    # the library's plain text, with each finding's remedies as the CLI's `graddoctor compare` command
    assert capsys.readouterr().out == render_text(graddoctor.diagnose(run), compare_line())


def test_terminal_output_goes_through_rich(store, run, capsys, monkeypatch):
    monkeypatch.setattr(terminal, "wants_rich", lambda stream=None: True)
    assert main(["diagnose", str(store), "--name", run.name]) == (1 if graddoctor.diagnose(run).reaches("error") else 0)
    out = capsys.readouterr().out
    assert out != str(graddoctor.diagnose(run)) and "vanishing_gradient" in out and "try, in this order:" in out


def test_rich_diagnosis_is_coloured_and_shows_every_layer_and_finding(run):
    console = recording_console()
    d = graddoctor.diagnose(run)
    terminal.print_diagnosis(d, console=console)
    text = console.export_text()
    assert "\x1b[" in console.file.getvalue()                       # colour codes on a terminal
    for name in run.layers:
        assert name in text
    for f in d.findings:
        assert str(f.kind) in text and str(f.severity).upper() in text
    assert "\u2026" not in text                                     # no number elided


def test_rich_layer_table_keeps_numbers_whole_on_a_narrow_terminal(run):
    console = recording_console(width=60)
    terminal.print_layer_table(run, console=console)
    text = console.export_text()
    assert "\u2026" not in text
    last_row = layer_table(run).splitlines()[-1].split()           # the output layer's row of the plain table
    assert " ".join(last_row) in " ".join(text.split())             # every number in full, in the same order


def test_rich_prints_names_as_text_not_markup():
    from fakes import fake_run

    run = fake_run([("[red]x[/red]", "Linear", "param")], {"grad_norm": {"[red]x[/red]": 1.0}}, steps=2)
    console = recording_console()
    terminal.print_layer_table(run, console=console)
    assert "[red]x[/red]" in console.export_text()


def test_wants_rich_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert terminal.wants_rich(io.StringIO()) is False
    assert terminal.wants_rich(Tty()) is True


def test_progress_passes_items_through_when_not_on_a_terminal(capsys):
    assert list(terminal.progress(iter([1, 2, 3]), 3, "x")) == [1, 2, 3]
    assert capsys.readouterr().err == ""


def test_importing_graddoctor_its_cli_and_reporting_does_not_import_matplotlib_or_rich():
    code = ("import sys, graddoctor, graddoctor.cli, graddoctor.reporting; "
            "print([m for m in ('matplotlib', 'rich') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_progress_bar_on_a_terminal_stderr(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(terminal.progress(iter(range(5)), 5, "drawing runs")) == [0, 1, 2, 3, 4]
    assert "drawing runs" in err.getvalue()
