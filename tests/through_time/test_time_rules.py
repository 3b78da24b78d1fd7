"""The through-time rules on the issue's cases (docs/through-time.md): the models and data are ours."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import graddoctor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tasks import recall, train_char_lm, train_recall  # noqa: E402


@pytest.fixture(scope="module")
def tanh_rnn_200():
    return graddoctor.diagnose(train_recall(recall.rnn()))


def test_tanh_rnn_length_200_vanishes_through_time(tanh_rnn_200):
    found = tanh_rnn_200.of_kind("vanishing_through_time")
    assert len(found) == 1
    f = found[0]
    assert str(f.severity) == "error" and f.layers == ("rnn",)
    ev = f.evidence
    assert ev["time_steps"] == 200 and ev["buckets"] == 64
    assert ev["grad_t196"] > 1e-3 and ev["grad_t0"] < 1e-30 and ev["zero_frac"] > 0.1
    assert 0.4 < ev["factor_per_step"] < 0.8         # default init: radius ~0.58
    assert 0.4 < ev["hh_radius_init"] < 0.8 and ev["bound_block_init"] == "l0.tanh"
    assert [a.id for a in f.remedies][:2] == ["swap_cell", "orthogonal_init"]
    assert "W_hh" in f.cause and "time step" in f.cause


def test_a_single_recurrent_layer_is_no_depth_profile(tanh_rnn_200):
    assert not tanh_rnn_200.kinds & {"vanishing_gradient", "exploding_gradient"}


def test_radius_3_explodes_through_time_with_clipping_first():
    d = graddoctor.diagnose(train_recall(recall.rnn_radius3(), steps=8, length=50))
    found = d.of_kind("exploding_through_time")
    assert len(found) == 1 and str(found[0].severity) == "error" and found[0].layers == ("rnn",)
    assert found[0].remedies[0].id == "grad_clip"
    assert found[0].evidence["hh_radius_init"] == pytest.approx(3.0, rel=1e-4)
    assert found[0].evidence["ratio_first_to_last"] > 1e6
    assert "exploding_gradient" not in d.kinds  # the depth rule no longer reads one RNN as layers


def test_relu_rnn_gets_identity_init():
    import torch

    model = recall.rnn()
    torch.manual_seed(0)
    model.rnn = torch.nn.RNN(16, 64, nonlinearity="relu", batch_first=True)
    d = graddoctor.diagnose(train_recall(model, steps=6))
    f = d.of_kind("vanishing_through_time")
    assert f and "identity_init" in [a.id for a in f[0].remedies][:3]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_char_lm_that_trains_has_nothing_above_info(cell):
    view, first, last = train_char_lm(cell)
    assert last < 0.75 * first  # it trains
    d = graddoctor.diagnose(view)
    assert not d.reaches("warning"), str(d)
    assert view.time_layers() == ["rnn"]
