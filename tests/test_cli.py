"""The `graddoctor` command: runs, show, export; exit codes and messages for bad input."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.cli import main


@pytest.fixture
def recorded(store_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for name in ("first", "second"):
        with graddoctor.watch(model, opt, store=store_path, name=name) as run:
            for _ in range(3):
                loss = model(torch.randn(8, 4)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log(loss=loss)
    return store_path


def test_runs_lists_every_run_with_status_and_counts(recorded, capsys):
    assert main(["runs", str(recorded)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "name", "status", "steps", "last_step", "layers", "created"]
    assert out[2].split()[:6] == ["1", "first", "finished", "3", "2", "3"]
    assert out[3].split()[:6] == ["2", "second", "finished", "3", "2", "3"]


def test_show_prints_one_row_per_layer_in_forward_order(recorded, capsys):
    assert main(["show", str(recorded), "--name", "first", "--step", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "run 'first'" in lines[0] and "step 1" in lines[0]
    assert [line.split()[0] for line in lines[3:6]] == ["0", "1", "2"]
    assert [line.split()[1] for line in lines[3:6]] == ["Linear", "ReLU", "Linear"]
    view = graddoctor.load(recorded, name="first")
    grad0 = view.stat("grad_norm", "0")[1]
    assert f"{grad0:.3g}" in lines[3]


def test_export_csv_round_trips_the_values(recorded, capsys):
    assert main(["export", str(recorded), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    view = graddoctor.load(recorded)
    assert {r["run"] for r in rows} == {"second"}
    got = {(int(r["step"]), r["layer"], r["stat"]): float(r["value"]) for r in rows}
    assert got[(2, "2", "grad_norm")] == view.stat("grad_norm", "2")[2]
    assert got[(0, "", "loss")] == pytest.approx(view.scalar("loss")[0])
    assert got[(1, "", "lr/group0")] == 0.1


def test_export_csv_writes_a_sometimes_logged_scalar_only_where_it_was_logged(store_path, capsys):
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=store_path) as run:
        for step in range(4):
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
            if step % 2:
                run.log(acc=0.5)
    assert main(["export", str(store_path)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["step"], r["value"]) for r in rows if r["stat"] == "acc"] == [("1", "0.5"), ("3", "0.5")]


def test_export_to_file(recorded, tmp_path):
    out = tmp_path / "x.csv"
    assert main(["export", str(recorded), "-o", str(out)]) == 0
    assert out.read_text().startswith("run,step,layer,stat,value")


def test_parquet_without_pyarrow_is_a_clear_error(recorded, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["export", str(recorded), "--format", "parquet", "-o", str(tmp_path / "x.pq")]) == 2
    assert "pyarrow" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["show", "{missing}"], "no run store"),
    (["show", "{foreign}"], "not a graddoctor run store"),
    (["show", "{store}", "--name", "nope"], "no run named 'nope'"),
    (["show", "{store}", "--step", "99"], "step 99 was not recorded"),
    (["runs", "{foreign}"], "left untouched"),
])
def test_bad_input_exits_2_with_a_message(recorded, tmp_path, capsys, argv, message):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello")
    paths = {"missing": tmp_path / "nope.db", "foreign": foreign, "store": recorded}
    assert main([a.format(**paths) for a in argv]) == 2
    assert message in capsys.readouterr().err
    assert foreign.read_text() == "hello"


def test_show_reports_first_nonfinite(store_path, capsys):
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=store_path):
        for k in range(3):
            loss = model(torch.randn(4, 3)).sum() * (float("nan") if k == 1 else 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert main(["show", str(store_path), "--step", "1"]) == 0
    out = capsys.readouterr().out
    assert "nan" in out and "first non-finite value: step 1" in out


def test_python_dash_m_runs_the_cli(recorded):
    done = subprocess.run([sys.executable, "-m", "graddoctor", "runs", str(recorded)], capture_output=True, text=True)
    assert done.returncode == 0 and "second" in done.stdout


def test_export_csv_is_what_csv_writer_wrote_row_by_row(tmp_path, capsys):
    """The chunked CSV (one text per layer and window) is byte for byte csv.writer over export_rows,
    with names that need quoting."""
    from graddoctor.cli._main import export_rows

    model = nn.Sequential()
    model.add_module('a,"b', nn.Linear(3, 4))
    model.add_module("act", nn.Tanh())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "q.db"
    with graddoctor.watch(model, opt, store=path, name='run "1", x') as run:
        for _ in range(3):
            loss = model(torch.randn(5, 3)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
    out = tmp_path / "q.csv"
    assert main(["export", str(path), "-o", str(out)]) == 0
    want = io.StringIO(newline="")
    writer = csv.writer(want)
    writer.writerow(["run", "step", "layer", "stat", "value"])
    for r in export_rows(graddoctor.load(path)):
        writer.writerow((r[0], r[1], r[2], r[3], repr(r[4])))
    assert out.read_bytes().decode() == want.getvalue()
    assert '"a,""b"' in want.getvalue() and ",,loss," in want.getvalue()
