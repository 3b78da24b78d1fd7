"""The sequence studies of issue 19 (rnn-through-time, pre-post-ln, lr-sensitivity, attention-entropy) run quick,
and their tasks, models and trainer additions do what they say."""

from __future__ import annotations

import json
import math

import pytest
import torch

from graddoctor.errors import ConfigError
from graddoctor.lab.runner import run_study
from graddoctor.train.sequence import SeqNetSpec
from graddoctor.train.tasks import load_task
from graddoctor.train.trainer import _cross_entropy, z_loss


def quick_run(name: str, tmp_path) -> tuple[dict, str]:
    run = run_study(name, quick=True, seeds=1, jobs=1, out=tmp_path, progress=False)
    return json.loads(run.results_path.read_text()), run.report_path.read_text()


def test_recall_labels_are_the_first_token_and_chars_targets_are_the_next_character():
    recall = load_task("recall-12")
    assert recall.x_train.shape == (8192, 12) and torch.equal(recall.y_train, recall.x_train[:, 0])
    assert set(recall.y_train.unique().tolist()) == {0, 1, 2, 3}              # the keys
    assert set(recall.x_train[:, 1:].unique().tolist()) == {4, 5, 6, 7}       # distractors: other symbols
    chars = load_task("chars-16")
    assert chars.x_train.dtype == torch.int64 and chars.y_train.shape == chars.x_train.shape
    assert torch.equal(chars.x_train[:, 1:], chars.y_train[:, :-1])          # y is x shifted by one character
    assert int(chars.x_train.max()) < 96                                     # printable ASCII and "?"
    with pytest.raises(ConfigError, match="recall-T"):
        load_task("recall-0")


def test_recurrent_inits_set_the_spectral_radius_identity_and_forget_bias():
    data = load_task("recall-4")
    torch.manual_seed(0)
    w = SeqNetSpec(kind="rnn", radius=1.5).build(data).rnn.weight_hh_l0.detach()
    assert torch.linalg.eigvals(w).abs().max().item() == pytest.approx(1.5, rel=1e-4)
    irnn = SeqNetSpec(kind="rnn", nonlinearity="relu", init="identity").build(data).rnn
    assert torch.equal(irnn.weight_hh_l0.detach(), torch.eye(32)) and not irnn.bias_hh_l0.any()
    lstm = SeqNetSpec(kind="lstm", forget_bias=1.0).build(data).rnn
    assert torch.all(lstm.bias_ih_l0[32:64] == 1) and not lstm.bias_hh_l0[32:64].any()
    chrono = SeqNetSpec(kind="lstm", init="chrono").build(load_task("recall-40")).rnn
    forget, inp = chrono.bias_ih_l0[32:64].detach(), chrono.bias_ih_l0[:32].detach()
    assert 0 <= forget.min() and forget.max() <= math.log(39) and torch.equal(inp, -forget)  # log U[1, T - 1]
    assert not chrono.bias_hh_l0[:64].any()
    with pytest.raises(ConfigError, match="chrono"):
        SeqNetSpec(kind="gru", init="chrono")
    with pytest.raises(ConfigError, match="multiple of heads"):
        SeqNetSpec(kind="transformer", width=30, heads=4)


def test_transformer_is_causal_and_z_loss_is_mean_squared_log_partition():
    data = load_task("chars-8")
    torch.manual_seed(0)
    model = SeqNetSpec(kind="transformer", depth=2, width=16, heads=2, norm_first=False, qk_norm=True).build(data)
    x = data.x_train[:2].clone()
    out = model(x)
    x[:, -1] = (x[:, -1] + 1) % 96
    assert torch.allclose(model(x)[:, :-1], out[:, :-1], atol=1e-6)         # the last token changes no earlier logit
    assert z_loss(out).item() == pytest.approx(torch.logsumexp(out, -1).pow(2).mean().item(), rel=1e-6)
    expected = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), data.y_train[:2].reshape(-1))
    assert _cross_entropy(out, data.y_train[:2]).item() == pytest.approx(expected.item(), rel=1e-6)


def test_rnn_through_time_gradient_decays_within_the_pascanu_bound(tmp_path):
    analysis, html = quick_run("rnn-through-time", tmp_path)
    verdicts = {c["id"]: c for c in analysis["claims"]}
    assert verdicts["T1"]["verdict"] == "supported"
    rnn = next(c for c in analysis["cells"] if c["variant"] == "rnn" and c["length"] == 32)
    assert rnn["init_factor"]["mean"] < rnn["init_radius"]["mean"] + 0.05 < rnn["init_bound"]["mean"]
    assert rnn["init_log10_ratio"]["mean"] < -6                              # 32 steps at ~0.5 per step
    lstm = next(c for c in analysis["cells"] if c["variant"] == "lstm" and c["length"] == 32)
    assert math.isfinite(lstm["init_factor"]["mean"])
    assert all(e["init_bound"]["mean"] >= 1.5 for e in analysis["explode"])   # sigma_max >= radius 1.5
    assert html.count("<figure>") == 3


def test_pre_post_ln_gradient_at_init_scales_with_depth_as_xiong_et_al(tmp_path):
    analysis, html = quick_run("pre-post-ln", tmp_path)
    slope = analysis["exponents"]
    assert abs(slope["post"]) < 0.2 and slope["pre"] < -0.3                  # Theorem 1: flat vs 1/sqrt(L)
    assert {c["id"] for c in analysis["claims"]} == {"X1", "X2", "X3", "X4"}
    assert html.count("<figure>") == 2


def test_lr_sensitivity_attention_logits_grow_without_qk_layernorm(tmp_path):
    analysis, html = quick_run("lr-sensitivity", tmp_path)
    verdicts = {c["id"]: c for c in analysis["claims"]}
    assert verdicts["W2"]["verdict"] == "supported"
    sens = analysis["sensitivity"]
    assert sens["qk+z"]["lr_sensitivity"] < sens["base"]["lr_sensitivity"]
    assert html.count("<figure>") == 2


def test_attention_entropy_collapses_at_four_times_the_lr_and_not_with_qk_layernorm(tmp_path):
    analysis, html = quick_run("attention-entropy", tmp_path)
    verdicts = {c["id"]: c for c in analysis["claims"]}
    assert verdicts["E1"]["verdict"] == "supported"
    point = {(p["variant"], p["mult"]): p for p in analysis["points"]}
    assert point["qk", 4]["collapsed"] == 0 and point["base", 4]["collapsed"] == 1
    assert point["qk", 4]["min_entropy_ratio"]["mean"] > 10 * point["base", 4]["min_entropy_ratio"]["mean"]
    assert html.count("<figure>") == 2
