"""check() and diagnose() put mean-field theory's expected gradient factors next to the measured ones."""

from __future__ import annotations

import json
import math

import torch
from torch import nn

import graddoctor


def _mlp(act: type[nn.Module], depth: int, width: int, gain2: float | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(depth):
        lin = nn.Linear(width, width)
        if gain2 is not None:
            nn.init.normal_(lin.weight, std=math.sqrt(gain2 / width))
            nn.init.zeros_(lin.bias)
        layers += [lin, act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def test_check_shows_predicted_next_to_measured_and_they_agree():
    torch.manual_seed(0)
    model = _mlp(nn.ReLU, depth=8, width=256, gain2=2.0)  # He init: critical, factor 1 per layer
    d = graddoctor.check(model, torch.randn(128, 256), steps=2)
    c = d.expected
    assert c is not None and c.step == 0
    assert [r.name for r in c.layers][:3] == ["0", "2", "4"]
    hidden = [r.predicted_factor for r in c.layers[:-2]]  # He-init ReLU layers: chi_1 = 1
    assert all(abs(f - 1.0) < 0.02 for f in hidden)
    assert abs(c.measured_mean / c.predicted_mean - 1) < 0.1
    text = str(d)
    assert "theory at initialization" in text and "geometric mean" in text
    theory = json.loads(d.to_json())["theory"]
    assert theory["phase"] == c.phase and len(theory["layers"]) == 9


def test_vanishing_finding_quotes_what_theory_expected():
    torch.manual_seed(0)
    model = _mlp(nn.Sigmoid, depth=12, width=128, gain2=1.0)
    d = graddoctor.check(model, torch.randn(64, 128), steps=3)
    (finding,) = d.of_kind("vanishing_gradient")
    expected = finding.evidence["expected_factor_per_layer"]
    assert 0.15 < expected < 0.35  # sqrt(chi_1) of sigmoid at sigma_w^2 = 1: sqrt(0.0557...) ~ 0.24
    assert "mean-field theory expects" in finding.cause
    assert abs(finding.evidence["measured_factor_per_layer_at_init"] / expected - 1) < 0.2


def test_a_model_theory_cannot_read_is_still_checked_with_a_note():
    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(8, 16, batch_first=True)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    d = graddoctor.check(Recurrent(), torch.randn(4, 5, 8), steps=2)
    assert d.expected is None
    assert any(note.startswith("theory:") for note in d.notes)


def test_findings_carry_remedy_ids_and_the_cli_writes_the_compare_command(tmp_path, capsys):
    from graddoctor.cli import main
    from graddoctor.cli._check import check_spec
    from graddoctor.cli._commands import compare_command
    from graddoctor.remedies.catalog import comparable

    d = check_spec("examples/deep_sigmoid.py:build", input_shape="64,64", classes=10, steps=3)
    (finding,) = d.of_kind("vanishing_gradient")
    ids = finding.comparable
    assert ids == comparable([a.id for a in finding.remedies]) and ids[0] == "relu"
    assert not hasattr(finding, "compare")  # library data: remedy ids, no command-line syntax
    data = json.loads(d.to_json())
    assert data["compare"][d.findings.index(finding)] == list(ids)
    assert "compare" not in data["findings"][0]  # the finding objects keep the contract's keys
    assert f"compare them on your model: graddoctor.compare(model_factory, data, remedies={list(ids)!r}" in str(d)
    assert "--remedies" not in str(d)
    # the CLI renders the command line, with the MODEL spec filled in
    assert main(["check", "examples/deep_sigmoid.py:build", "--input-shape", "64,64", "--classes", "10",
                 "--steps", "3"]) in (0, 1)
    out = capsys.readouterr().out
    assert f"compare them on your model: {compare_command(ids, 'examples/deep_sigmoid.py:build')}" in out
    assert compare_command(ids, "examples/deep_sigmoid.py:build").startswith(
        "graddoctor compare examples/deep_sigmoid.py:build --data DATA.npz --remedies relu")
    assert comparable(["guard_numerics"]) == ()
    assert compare_command(["change_optimizer", "grad_clip"]).endswith(
        "--remedies change_optimizer,grad_clip --optimizer sgd --seeds 3")