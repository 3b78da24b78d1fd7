"""Oracle tests of the transformer statistics: attention logits and entropy against softmax(QKᵀ/√d)
by hand (causal and padding masks), log Z of the logits, gradient norms before and after clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import graddoctor
from graddoctor.probes.attention import attention_stats, logit_stats, mha_logits, sdpa_logits

from .gpt import GPT, train

RTOL = 1e-5


def by_hand(q, k, allowed, scale=None, bias=None):
    """Per (batch, head, query): max logit and entropy over the allowed keys, in float64 loops."""
    q, k = q.double().numpy(), k.double().numpy()
    b, h, tq, d = q.shape
    s = 1 / math.sqrt(d) if scale is None else scale
    top, ent, rows = -math.inf, np.zeros(h), np.zeros(h)
    for bi in range(b):
        for hi in range(h):
            for i in range(tq):
                z = [float(q[bi, hi, i] @ k[bi, hi, j]) * s + (0.0 if bias is None else float(bias[bi, hi, i, j]))
                     for j in range(k.shape[2]) if allowed(bi, hi, i, j)]
                if not z:
                    continue
                top = max(top, max(z))
                m = max(z)
                w = [math.exp(v - m) for v in z]
                p = [v / sum(w) for v in w]
                ent[hi] += -sum(pi * math.log(pi) for pi in p if pi > 0)
                rows[hi] += 1
    return top, ent, rows


def _qk(b=2, h=3, t=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, t, d, generator=g) * 2, torch.randn(b, h, t, d, generator=g) * 2


def _check(stats, expected):
    top, ent, rows = (x.double().numpy() for x in stats)
    assert float(top) == pytest.approx(expected[0], rel=RTOL)
    np.testing.assert_allclose(rows, expected[2])
    np.testing.assert_allclose(ent, expected[1], rtol=RTOL, atol=1e-6)


def test_sdpa_causal_matches_softmax_by_hand():
    q, k = _qk()
    _check(attention_stats(*sdpa_logits(q, k, is_causal=True)), by_hand(q, k, lambda b, h, i, j: j <= i))


def test_sdpa_padding_bool_mask_and_scale():
    q, k = _qk()
    keep = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    keep[1, ..., 3:] = False  # the second sequence is padded after 3 tokens
    expected = by_hand(q, k, lambda b, h, i, j: bool(keep[b, 0, 0, j]) and j <= i, scale=0.3)
    _check(attention_stats(*sdpa_logits(q, k, keep, is_causal=True, scale=0.3)), expected)


def test_sdpa_float_mask_hugging_face_style():
    q, k = _qk()
    mask = torch.zeros(2, 1, 5, 5)
    mask[0, ..., 4] = torch.finfo(torch.float32).min  # padded key, as transformers writes it
    mask[1] += 0.5 * torch.arange(5.0)                # an ALiBi-like bias: part of the logit
    bias = mask.expand(2, 3, 5, 5)
    expected = by_hand(q, k, lambda b, h, i, j: not (b == 0 and j == 4), bias=bias)
    _check(attention_stats(*sdpa_logits(q, k, mask)), expected)


def test_fully_masked_rows_are_left_out():
    q, k = _qk()
    keep = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    keep[0, 0, 2] = False
    _check(attention_stats(*sdpa_logits(q, k, keep)), by_hand(q, k, lambda b, h, i, j: not (b == 0 and i == 2)))


def test_multihead_attention_with_padding_and_causal_mask():
    torch.manual_seed(0)
    m = nn.MultiheadAttention(12, 3, batch_first=True)
    x = torch.randn(2, 5, 12)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True                                     # True: ignored (nn.MultiheadAttention's convention)
    causal = nn.Transformer.generate_square_subsequent_mask(5)  # float, -inf above the diagonal
    w, bias = m.in_proj_weight, m.in_proj_bias
    q = (x @ w[:12].T + bias[:12]).view(2, 5, 3, 4).transpose(1, 2)
    k = (x @ w[12:24].T + bias[12:24]).view(2, 5, 3, 4).transpose(1, 2)
    expected = by_hand(q.detach(), k.detach(), lambda b, h, i, j: j <= i and not bool(pad[b, j]))
    _check(attention_stats(*mha_logits(m, x, x, key_padding_mask=pad, attn_mask=causal)), expected)
    # the weights torch itself uses agree: entropy of its (per-head) attention weights
    _, weights = m(x, x, x, key_padding_mask=pad, attn_mask=causal, average_attn_weights=False)
    p = weights.detach().double()
    h_torch = -(torch.where(p > 0, p * p.log(), torch.zeros(()))).sum(-1)
    np.testing.assert_allclose(h_torch.sum((0, 2)).numpy(), expected[1], rtol=1e-4)


def test_logit_stats_match_logsumexp():
    z = torch.randn(4, 7, 11) * 5
    lse, rows, top = logit_stats(z)
    assert float(lse / rows) == pytest.approx(float(torch.logsumexp(z.double(), -1).mean()), rel=1e-6)
    assert float(top) == float(z.abs().max())


def _watched_gpt(eager: bool, **options):
    torch.manual_seed(0)
    model = GPT(depth=2, eager=eager)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seen = {}

    def grab(name):
        def hook(m, inputs, output):
            seen.setdefault(name, []).append(output.detach())
        return hook

    model.lm_head.register_forward_hook(grab("logits"))
    for i, block in enumerate(model.blocks):  # the attention logits by hand, from the qkv output
        block.attn.qkv.register_forward_hook(grab(f"qkv{i}"))
    with graddoctor.watch(model, opt, attention_every=2, **options) as run:
        train(model, run, steps=4, lr=1e-3)
    return graddoctor.load(run), seen


@pytest.mark.parametrize("eager", [False, True], ids=["sdpa", "eager"])
def test_watched_gpt_attention_and_tied_logits(eager):
    view, seen = _watched_gpt(eager)
    assert "lm_head" in view.layers  # tied to wte: no parameter of its own, still a layer
    assert {i.name: i.n_params for i in view.layer_info}["lm_head"] == 0
    for step in range(4):
        z = seen["logits"][step].double()
        assert view.stat("logit_lse_mean", "lm_head")[step] == pytest.approx(float(torch.logsumexp(z, -1).mean()), rel=1e-6)
        assert view.stat("logit_abs_max", "lm_head")[step] == pytest.approx(float(z.abs().max()), rel=1e-6)
    for i in range(2):
        name = f"blocks.{i}.attn"
        assert view.layer_info[view.layers.index(name)].kind == "attention"
        amax = view.stat("attn_logit_max", name)
        assert np.isnan(amax[1]) and np.isnan(amax[3])  # attention_every=2: steps 0 and 2 only
        for step in (0, 2):
            qkv = seen[f"qkv{i}"][step]
            q, k, _ = (t.view(8, 16, 4, 8).transpose(1, 2) for t in qkv.split(32, dim=2))
            top, ent, rows = by_hand(q, k, lambda b, h, a, j: j <= a)
            assert amax[step] == pytest.approx(top, rel=RTOL)
            assert view.stat("attn_entropy", name)[step] == pytest.approx(ent.sum() / rows.sum(), rel=RTOL)
            assert view.stat("attn_entropy_min_head", name)[step] == pytest.approx((ent / rows).min(), rel=RTOL)


def test_attention_reading_leaves_no_trace():
    torch.manual_seed(0)
    model = GPT(depth=2)
    x = torch.randint(32, (2, 16))
    with graddoctor.watch(model, torch.optim.SGD(model.parameters(), lr=0.0), attention_every=1) as run:
        model(x).sum().backward()
        run.optimizer.step()
    assert not torch.overrides._get_current_function_mode_stack()
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    for p in model.parameters():
        assert not getattr(p, "_post_accumulate_grad_hooks", None)


def test_pre_clip_gradient_norms_and_clip_factor():
    torch.manual_seed(0)
    model = GPT(depth=2)
    ref = {}

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    original = torch.nn.utils.clip_grad_norm_

    def clip_and_keep(params, max_norm):  # the reference: every norm, before and after clipping
        params = list(params)
        ref.setdefault("pre", []).append({id(p): p.grad.double().norm().item() for p in params})
        original(params, max_norm)
        ref.setdefault("post", []).append({id(p): p.grad.double().norm().item() for p in params})

    torch.nn.utils.clip_grad_norm_ = clip_and_keep
    try:
        with graddoctor.watch(model, opt) as run:
            train(model, run, steps=3, lr=0.1, clip=0.05)
    finally:
        torch.nn.utils.clip_grad_norm_ = original
    view = graddoctor.load(run)
    fc = model.blocks[0].mlp.fc
    for step in range(3):
        pre = math.sqrt(ref["pre"][step][id(fc.weight)] ** 2 + ref["pre"][step][id(fc.bias)] ** 2)
        post = math.sqrt(ref["post"][step][id(fc.weight)] ** 2 + ref["post"][step][id(fc.bias)] ** 2)
        assert view.stat("grad_norm_pre_clip", "blocks.0.mlp.fc")[step] == pytest.approx(pre, rel=RTOL)
        assert view.stat("grad_norm", "blocks.0.mlp.fc")[step] == pytest.approx(post, rel=RTOL)
        total_pre = math.sqrt(sum(v * v for v in ref["pre"][step].values()))
        assert view.scalar("clip_factor")[step] == pytest.approx(0.05 / total_pre, rel=1e-4)


def test_without_clipping_the_clip_factor_is_one():
    view, _ = _watched_gpt(False)
    np.testing.assert_allclose(view.scalar("clip_factor"), 1.0, rtol=1e-6)
    np.testing.assert_allclose(view.stat("grad_norm_pre_clip", "blocks.0.mlp.fc"),
                               view.stat("grad_norm", "blocks.0.mlp.fc"), rtol=1e-6)
