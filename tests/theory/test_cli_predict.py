"""`graddoctor predict`: the model-free form, a MODEL factory, JSON output, exit codes for bad input."""

from __future__ import annotations

import json

import pytest

from graddoctor.cli import main

MODEL_FILE = '''
from torch import nn


def build():
    layers = []
    for _ in range(6):
        layers += [nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(32, 4))


def conv():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, padding=1))
'''


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(MODEL_FILE)
    return path


def test_model_free_form_prints_phase_depth_scales_and_critical_init(capsys):
    assert main(["predict", "--activation", "tanh", "--sigma-w2", "1.5", "--sigma-b2", "0.05", "--depth", "50"]) == 0
    out = capsys.readouterr().out
    assert "50 Linear/Conv layers predicted" in out
    assert "ordered: gradients shrink toward the input" in out
    assert "trainable depth ~ 6 xi_c = 94.7" in out
    assert "sigma_w^2 = 1.761" in out


def test_model_free_json(capsys):
    assert main(["predict", "--activation", "relu", "--sigma-w2", "2", "--depth", "5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["phase"] == "critical" and len(data["layers"]) == 5
    assert data["summary"]["scales"]["chi1"] == pytest.approx(1.0)


def test_model_factory_with_batch_from_input_shape(model_file, capsys):
    assert main(["predict", f"{model_file}:build", "--input-shape", "64,32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch"] == 64 and data["covered"] is True
    assert data["summary"]["bn_growth"] == pytest.approx(1.4931, abs=1e-3)   # ReLU at B = 64; pi/(pi-1) at B -> inf
    assert main(["predict", f"{model_file}:conv", "--input-shape", "8,3,16,16"]) == 0
    assert "Conv2d" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["predict", "--activation", "tanh"], "missing --sigma-w2, --depth"),
    (["predict", "--activation", "tanhh", "--sigma-w2", "1", "--depth", "3"], "unknown activation 'tanhh'"),
    (["predict", "--activation", "tanh", "--sigma-w2", "-1", "--depth", "3"], "sigma_w2 must be a positive number"),
    (["predict", "--activation", "tanh", "--sigma-w2", "1", "--depth", "0"], "depth must be a positive integer"),
    (["predict", "nowhere.py:build"], "no such file"),
    (["predict", "{file}:conv"], "input_shape"),
    (["predict", "{file}:build", "--input-shape", "4,32"], "batch size >= 5"),
    (["predict", "{file}:build", "--activation", "tanh"], "not both"),
])
def test_bad_input_exits_2_with_a_message_that_says_what_to_do(argv, needle, model_file, capsys):
    argv = [a.replace("{file}", str(model_file)) for a in argv]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err
