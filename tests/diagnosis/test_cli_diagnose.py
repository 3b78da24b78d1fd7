"""`graddoctor diagnose` and `graddoctor check`: output, exit codes (0/1/2) and messages for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scenarios import he, mlp
from test_json import validate
from torch import nn

import graddoctor
from graddoctor.cli import main
from graddoctor.store.sqlite import RunStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "deep_sigmoid.py")


def record(path, name, model, steps=8):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with graddoctor.watch(model, opt, store=path, name=name, hist_every=0) as run:
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(torch.randn(32, 16)), torch.randint(0, 10, (32,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "runs.db"
    torch.manual_seed(0)
    record(path, "sigmoid", mlp(10, 32, nn.Sigmoid, d_in=16))      # vanishing: an error
    record(path, "healthy", mlp(4, 32, nn.ReLU, init=he, d_in=16))
    return path


def test_diagnose_exit_code_follows_fail_on(store, capsys):
    assert main(["diagnose", str(store), "--name", "sigmoid"]) == 1
    out = capsys.readouterr().out
    assert "ERROR  vanishing_gradient" in out and "try, in this order:" in out
    assert main(["diagnose", str(store)]) == 0                       # the latest run: healthy
    assert "run 'healthy'" in capsys.readouterr().out
    assert main(["diagnose", str(store), "--name", "healthy", "--fail-on", "info"]) == 0


def test_diagnose_json_validates(store, capsys):
    assert main(["diagnose", str(store), "--name", "sigmoid", "--json", "--fail-on", "warning"]) == 1
    doc = validate(capsys.readouterr().out)
    assert doc["run"]["name"] == "sigmoid" and doc["findings"][0]["kind"] == "vanishing_gradient"


def test_diagnose_bad_input_exits_2(store, tmp_path, capsys):
    empty = tmp_path / "empty.db"
    RunStore(empty).close()
    foreign = tmp_path / "notes.txt"
    foreign.write_text("hello")
    for argv, message in [
        (["diagnose", str(tmp_path / "missing.db")], "no run store"),
        (["diagnose", str(empty)], "holds no runs yet"),
        (["diagnose", str(foreign)], "not a graddoctor run store"),
        (["diagnose", str(store), "--name", "nope"], "no run named 'nope'"),
    ]:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert foreign.read_text() == "hello"


def test_check_example_names_vanishing_and_saturation(capsys):
    assert main(["check", f"{EXAMPLE}:build", "--input-shape", "64,64", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "vanishing_gradient" in out and "saturated_units" in out
    assert "random N(0, 1) inputs of shape (64, 64)" in out and "this ran its code" in out
    assert "1. Use ReLU-family activations instead of sigmoid/tanh [relu]" in out
    assert main(["check", f"{EXAMPLE}:build", "--input-shape", "64,64", "--classes", "10", "--json",
                 "--fail-on", "warning"]) == 1
    doc = validate(capsys.readouterr().out)
    assert {"vanishing_gradient", "saturated_units"} <= {f["kind"] for f in doc["findings"]}


FACTORIES = textwrap.dedent("""
    import torch
    from torch import nn

    def good():
        return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def raises():
        raise RuntimeError("cannot build today")

    def not_a_model():
        return [nn.Linear(2, 2)]
""")


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(FACTORIES)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("mypkg.nets", None)
    sys.modules.pop("mypkg", None)


def test_check_accepts_a_module_path_and_a_data_file(user_code, capsys):
    assert main(["check", "mypkg.nets:good", "--input-shape", "16,64", "--steps", "3"]) == 0
    assert "3 recorded steps" in capsys.readouterr().out
    np.savez(user_code / "data.npz", x=np.random.randn(40, 64).astype("float32"), y=np.arange(40) % 10)
    assert main(["check", "mypkg/nets.py:good", "--data", "data.npz", "--steps", "2"]) == 0
    assert "the first 40 samples of data.npz" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["check", "missing.py:build", "--input-shape", "4,64"], "no such file: 'missing.py'"),
    (["check", "mypkg/nets.py:raises", "--input-shape", "4,64"], "raised RuntimeError: cannot build today"),
    (["check", "mypkg/nets.py:not_a_model", "--input-shape", "4,64"], "returned a list, not a torch.nn.Module"),
    (["check", "mypkg/nets.py:good", "--input-shape", "4,100"], r"expects inputs of shape (N, ..., 64)"),
    (["check", "mypkg/nets.py:nothing", "--input-shape", "4,64"], "has no function 'nothing'; it defines: good"),
    (["check", "mypkg/nets.py", "--input-shape", "4,64"], "MODEL must be path/to/file.py:factory"),
    (["check", "nopkg.nets:good", "--input-shape", "4,64"], "cannot import module 'nopkg.nets'"),
    (["check", "mypkg/nets.py:good"], "needs --input-shape"),
    (["check", "mypkg/nets.py:good", "--input-shape", "64"], "batch size then a sample's shape"),
    (["check", "mypkg/nets.py:good", "--data", "nope.npz"], "no such data file"),
])
def test_check_bad_input_exits_2_with_a_message(user_code, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_the_command_from_the_readme_runs(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "graddoctor", "check", "examples/deep_sigmoid.py:build", "--input-shape", "64,64",
         "--classes", "10"], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # a tiny model: spare the shared CPU's other core
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING  vanishing_gradient" in done.stdout and "WARNING  saturated_units" in done.stdout
