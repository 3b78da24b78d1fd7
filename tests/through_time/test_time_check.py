"""`graddoctor check` on sequence models: the temporal probe and sequence inputs (docs/through-time.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import graddoctor
from graddoctor.cli._check import check_spec
from graddoctor.diagnosis._inputs import sequence_inputs
from graddoctor.diagnosis.temporal import PROBE, temporal_probe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import CharLM, EXAMPLES  # noqa: E402


def test_probe_is_the_gradient_of_the_last_positions_loss():
    torch.manual_seed(0)
    model = CharLM(11, "gru", hidden=16)
    tokens, targets = torch.randint(0, 11, (4, 30)), torch.randint(0, 11, (4, 30))

    def loss_of(out):
        return F.cross_entropy(out.reshape(-1, 11), targets.reshape(-1))

    found = temporal_probe(model, lambda: model(tokens), loss_of)
    edges, got = found["rnn"]
    assert edges == list(range(31))
    # oracle: l_T alone (the mean over N*T positions: the last position's share), autograd to x
    x = model.emb(tokens).detach().requires_grad_(True)
    out = model.head(model.rnn(x)[0])
    l_T = F.cross_entropy(out[:, -1], targets[:, -1], reduction="sum") / targets.numel()
    (g,) = torch.autograd.grad(l_T, x)
    want = g.double().norm(dim=(0, 2)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert got[0] < got[-1]  # the full loss's gradient would be near flat: the probe is not it
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated


def test_sequence_inputs_say_what_they_are():
    gen = torch.Generator().manual_seed(0)
    rnn_first = nn.Sequential(nn.LSTM(5, 4, batch_first=True))
    assert sequence_inputs(rnn_first, (8, 30), None, gen).shape == (8, 30, 5)
    assert sequence_inputs(nn.Sequential(nn.GRU(5, 4)), (8, 30), None, gen).shape == (30, 8, 5)
    tokens = sequence_inputs(nn.Sequential(nn.Linear(2, 2)), (8, 30), 64, gen)
    assert tokens.dtype == torch.long and tokens.max() < 64


def test_check_finds_vanishing_through_time_with_vocab_tokens():
    d = check_spec(f"{EXAMPLES / 'long_memory_rnn.py'}:rnn", input_shape="16,200", vocab=4, classes=4, steps=6)
    f = d.of_kind("vanishing_through_time")
    assert f and str(f[0].severity) == "error" and f[0].layers == ("rnn",)
    assert any("integer token ids in [0, 4)" in n for n in d.notes)
    assert any("temporal probe" in n for n in d.notes)


def test_check_lstm_lm_is_quiet_above_info():
    d = graddoctor.check(CharLM(30, "lstm", hidden=64), (torch.randint(0, 30, (16, 20)), torch.randint(0, 30, (16, 20))),
                         loss_fn=lambda out, y: F.cross_entropy(out.reshape(-1, 30), y.reshape(-1)), steps=6)
    assert not d.reaches("warning"), str(d)
    found = [f for f in d.findings if f.kind == "vanishing_through_time"]
    assert not found or found[0].evidence["window"] == "probe"


def test_cli_check_vocab(tmp_path):
    out = subprocess.run([sys.executable, "-m", "graddoctor", "check", f"{EXAMPLES / 'long_memory_rnn.py'}:rnn",
                          "--input-shape", "8,120", "--vocab", "4", "--classes", "4", "--steps", "3", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr  # an error-level finding
    assert '"vanishing_through_time"' in out.stdout
    assert PROBE  # the probe's stat name is public
