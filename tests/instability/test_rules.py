"""The instability rules on small transformers: unstable learning rates are found before the loss
diverges, a sane rate with warm-up gets nothing above info, post-LN is recognised."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graddoctor
from graddoctor.diagnosis.architecture import describe

from diagnosis.fakes import fake_run  # tests/diagnose (a namespace package from tests/)
from .gpt import GPT, train


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trained(lr, warmup, steps, depth=6, **model):
    torch.manual_seed(0)
    m = GPT(vocab=32, width=64, depth=depth, heads=4, **model)
    opt = torch.optim.AdamW(m.parameters(), lr=lr)
    with graddoctor.watch(m, opt, attention_every=1) as run:
        losses = train(m, run, steps=steps, lr=lr, warmup=warmup)
    return graddoctor.diagnose(run), losses


def test_unstable_rate_is_found_before_the_loss_diverges():
    d, losses = _trained(0.1, 0, steps=12)
    by_kind = {str(f.kind): f for f in d.findings}
    spike = by_kind["loss_spike"]
    diverged = spike.step_range[0]
    assert losses[diverged] > 2 * losses[0]  # the loss did diverge there
    updates = by_kind["large_updates"]
    assert updates.severity.rank >= 1 and updates.step_range[0] < diverged
    assert updates.remedies[0].id in ("warmup", "lower_lr", "qk_layernorm")
    growth = [by_kind[k] for k in ("activation_growth", "attention_logit_growth") if k in by_kind]
    early = [f for f in growth if f.severity.rank >= 1 and f.step_range[0] < diverged]
    assert early, [(str(f.kind), f.step_range) for f in growth]
    assert all(f.remedies[0].id in ("warmup", "lower_lr", "qk_layernorm") for f in early)


def test_sane_rate_with_warmup_gets_nothing_above_info():
    d, losses = _trained(1e-3, 10, steps=40)
    assert losses[-1] < losses[0] - 0.5  # it learns
    assert not [(str(f.kind), str(f.severity)) for f in d.findings if f.severity.rank >= 1]


def _encoder_grads(norm_first: bool):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(64, 4, 256, dropout=0.0, batch_first=True, norm_first=norm_first)
    model = torch.nn.Sequential(torch.nn.Embedding(32, 64), torch.nn.TransformerEncoder(layer, 12, enable_nested_tensor=False),
                                torch.nn.Linear(64, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    with graddoctor.watch(model, opt, attention_every=0) as run:
        for _ in range(2):
            x = torch.randint(32, (8, 16))
            loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 32), x.reshape(-1))
            opt.zero_grad(); loss.backward(); opt.step()
    view = graddoctor.load(run)
    return view, [view.stat("grad_norm", f"1.layers.{i}.linear1")[0] for i in range(12)]


def test_post_ln_stack_at_init_shows_output_side_gradient_growth():
    view, post = _encoder_grads(norm_first=False)
    _, pre = _encoder_grads(norm_first=True)
    # the output side gets the largest gradient in post-LN, not in pre-LN (Xiong et al. 2020)
    assert post[-1] > 2 * post[0] and post[-1] == max(post)
    assert pre[-1] < 1.2 * pre[0]
    assert describe(view).norm_placement == "post" and describe(view).transformer


def _blocks(post: bool, n: int = 4):
    layers = [("wte", "Embedding", "param")]
    for i in range(n):
        block = [(f"h.{i}.attn", "Attention", "attention"), (f"h.{i}.attn.qkv", "Linear", "param"),
                 (f"h.{i}.attn.proj", "Linear", "param"), (f"h.{i}.fc", "Linear", "param"), (f"h.{i}.out", "Linear", "param")]
        ln1, ln2 = (f"h.{i}.ln1", "LayerNorm", "param"), (f"h.{i}.ln2", "LayerNorm", "param")
        layers += (block[:3] + [ln1] + block[3:] + [ln2]) if post else ([ln1] + block[:3] + [ln2] + block[3:])
    return layers + [("head", "Linear", "param")]


@pytest.mark.parametrize("post", [True, False], ids=["post-LN", "pre-LN"])
def test_depth_finding_on_a_transformer_names_what_fits_its_architecture(post):
    layers = _blocks(post)
    weights = [n for n, t, k in layers if k == "param" and t != "LayerNorm"]
    grads = {n: 1e-4 * (3.0 ** k) for k, n in enumerate(weights)}  # vanishing toward the input
    run = fake_run(layers, {"out_grad_norm": grads, "grad_norm": grads, "update_ratio": {n: 1e-3 for n in weights}},
                   steps=10, optimizer="AdamW")
    assert describe(run).norm_placement == ("post" if post else "pre")
    f = next(f for f in graddoctor.diagnose(run).findings if str(f.kind) == "vanishing_gradient")
    ids = [a.id for a in f.remedies]
    assert not {"residual", "layer_norm"} & set(ids)  # it has both
    assert ids[:3] == (["pre_ln", "warmup", "lower_lr"] if post else ["warmup", "lower_lr", "grad_clip"])
    assert ("post-LN" in f.cause) == post


def test_gradient_spike_in_a_converged_run_is_judged_against_the_run_scale():
    layers = [("0", "Linear", "param"), ("1", "ReLU", "activation"), ("2", "Linear", "param")]
    total = np.r_[np.full(10, 10.0), np.geomspace(10, 0.01, 30), np.full(10, 0.01)]
    total[45] = 0.12  # one noisy batch: 12x the recent median, still far below the start
    run = fake_run(layers, {"grad_norm": {"0": total, "2": total}}, steps=len(total),
                   scalars={"loss": np.r_[np.geomspace(2.3, 0.001, 40), np.full(10, 0.001)]})
    assert not [f for f in graddoctor.diagnose(run).findings if str(f.kind) == "exploding_gradient"]
    total[45] = 20.0  # above the start: a real spike
    run = fake_run(layers, {"grad_norm": {"0": total, "2": total}}, steps=len(total))
    assert [f for f in graddoctor.diagnose(run).findings if str(f.kind) == "exploding_gradient"]


def test_loss_spike_judged_on_the_run_scale():
    noisy = np.r_[np.geomspace(2.3, 0.001, 40), np.full(10, 0.001)]
    noisy[45] = 0.01  # 10x the median, but 0.4% of the first loss
    layers = [("0", "Linear", "param")]
    assert not [f for f in graddoctor.diagnose(fake_run(layers, {}, steps=50, scalars={"loss": noisy})).findings
                if str(f.kind) == "loss_spike"]
    noisy[45] = 3.0
    f = next(f for f in graddoctor.diagnose(fake_run(layers, {}, steps=50, scalars={"loss": noisy})).findings
             if str(f.kind) == "loss_spike")
    assert f.severity.value == "error" and f.step_range == (45, 45)


def test_loss_spike_above_the_start_in_a_run_that_recovered_is_a_warning():
    """An LSTM learning a long-memory task (docs/through-time.md) spikes above its first loss, then reaches 0.002."""
    layers = [("0", "Linear", "param")]
    loss = np.r_[np.full(20, 1.38), np.geomspace(1.38, 0.8, 20), [3.7], np.geomspace(0.8, 0.002, 40), np.full(20, 0.002)]
    f = next(f for f in graddoctor.diagnose(fake_run(layers, {}, steps=len(loss), scalars={"loss": loss})).findings
             if str(f.kind) == "loss_spike")
    assert f.severity.value == "warning" and f.evidence["recovered"] == 1 and "recovered" in f.cause
    loss[-20:] = 1.5  # came back, then stayed above the start: an error
    f = next(f for f in graddoctor.diagnose(fake_run(layers, {}, steps=len(loss), scalars={"loss": loss})).findings
             if str(f.kind) == "loss_spike")
    assert f.severity.value == "error" and f.evidence["recovered"] == 0 and "diverged" in f.cause
