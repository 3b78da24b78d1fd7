"""The study registry, the runner's files and TOML studies (errors name the line and key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graddoctor.cli import main
from graddoctor.errors import ConfigError
from graddoctor.lab.runner import run_study
from graddoctor.lab.registry import get_study, studies
from graddoctor.lab.study import Study
from graddoctor.lab.toml_study import load_toml

EXAMPLE = Path(__file__).parents[2] / "src" / "graddoctor" / "lab" / "example.toml"

TINY = """
[study]
name = "tiny"
data = "gaussian"

[net]
depth = [2, 3]
width = 8

[train]
steps = 3
lr = 0.05

[analysis]
metrics = ["test_accuracy", "grad_ratio", "diverged"]
"""


def test_registry_holds_seed_claims():
    assert isinstance(studies()["seed-claims"], Study)


def test_unknown_study_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown study 'nope'; the studies are: .*seed-claims"):
        get_study("nope")


def test_cli_lab_list_and_unknown_study(capsys):
    assert main(["lab", "list"]) == 0
    assert "seed-claims" in capsys.readouterr().out
    assert main(["lab", "run", "nope"]) == 2
    assert "seed-claims" in capsys.readouterr().err


def test_cli_ctrl_c_says_how_to_resume_and_exits_130(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("graddoctor.lab.runner.run_study", interrupted)
    assert main(["lab", "run", "seed-claims", "--quick"]) == 130
    assert "run the same command again" in capsys.readouterr().err


def test_a_toml_study_runs_into_its_directory(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    run = run_study(str(path), seeds=2, jobs=1, out=tmp_path / "out", progress=False)
    results = json.loads(run.results_path.read_text())
    assert results["table"]["header"] == ["depth", "test_accuracy", "grad_ratio", "diverged"]
    assert [row[0] for row in results["table"]["rows"]] == ["2", "3"]
    assert results["configs"][0]["metrics"]["test_accuracy"]["n"] == 2
    assert run.report_path.read_text().count("<h2") >= 2
    assert "test_accuracy" in str(run)


def test_the_example_toml_is_valid():
    study = load_toml(EXAMPLE)
    assert study.name == "sigmoid-vs-relu-depth"


def test_malformed_toml_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[net]\ndepth = [2, 3\nwidth = 8\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML: .*line 3"):
        load_toml(path)


@pytest.mark.parametrize("text, message", [
    ("[net]\nwidth = 8\ndpeth = 3\n", r"line 3: \[net\] has no key 'dpeth'; the keys are .*depth"),
    ("[training]\nsteps = 3\n", r"line 1: unknown section \[training\]"),
    ("[quick.train]\nstpes = 3\n", r"line 2: \[quick.train\] has no key 'stpes'"),
    ("[analysis]\nmetrics = ['accuracy']\n", r"line 2: .*metrics \['accuracy'\] unknown"),
], ids=["key", "section", "quick-key", "metric"])
def test_bad_toml_keys_name_line_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_toml(path)


def test_a_toml_value_the_specs_refuse(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[net]\nactivation = ['relu', 'swishy']\n")
    with pytest.raises(ConfigError, match="bad.toml, line 2, activation must be one of .*; got 'swishy'"):
        load_toml(path)
    path.write_text("[train]\nsteps = 10\n\n[quick.train]\nsteps = 0\n")       # the quick variant is checked too
    with pytest.raises(ConfigError, match=r"bad.toml, line 5, steps must be an integer >= 1, got 0"):
        load_toml(path)


def test_reanalysing_a_finished_study_keeps_its_training_wall_time(tmp_path, monkeypatch):
    import time

    from graddoctor.lab import sweep

    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    first = json.loads(run_study(str(path), seeds=1, jobs=1, out=tmp_path / "out", progress=False,
                                 report=False).results_path.read_text())
    assert first["seconds"] > 0 and first["run_seconds"] >= first["seconds"] - 0.2
    monkeypatch.setattr(sweep, "_train", lambda item: pytest.fail(f"trained {item[0].name} again"))  # jobs=1: in process
    time.sleep(0.3)  # so an analysis that reported its own elapsed time as "seconds" could not match by accident
    again = json.loads(run_study(str(path), seeds=1, jobs=1, out=tmp_path / "out", progress=False,
                                 report=False).results_path.read_text())
    assert (again["seconds"], again["run_seconds"]) == (first["seconds"], first["run_seconds"])
    assert again["analysis_seconds"] >= 0


def test_training_seconds_is_the_union_of_the_runs_intervals(tmp_path):
    from graddoctor.lab import sweep

    store = str(tmp_path / "s.db")
    with sweep._connect(store) as db:
        db.execute(sweep.SIDE_TABLE)
        for name, end, secs in [("a", 10.0, 4.0), ("b", 12.0, 4.0), ("c", 30.0, 2.0), ("other", 50.0, 9.0)]:
            db.execute("INSERT INTO lab_runs VALUES (?, ?, ?, ?)", (name, "{}", json.dumps({"seconds": secs}), end))
    # a: [6, 10], b: [8, 12] overlap (6 s of wall), c: [28, 30]; "other" is not one of the study's runs
    assert sweep.training_seconds(store, ["a", "b", "c"]) == {"seconds": 8.0, "run_seconds": 10.0}
