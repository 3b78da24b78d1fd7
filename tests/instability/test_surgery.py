"""QK-layernorm and pre-LN surgery on torch's attention modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graddoctor.remedies.surgery import QKNormAttention, RemedyError, apply_remedy


def _encoder(norm_first=False):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(16, 3))


def test_qk_layernorm_with_identity_norms_matches_the_original_when_q_k_are_already_normalised():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    wrapped = QKNormAttention(mha)
    x = torch.randn(3, 5, 8)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, 3:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    y, _ = wrapped(x, x, x, key_padding_mask=pad, attn_mask=causal)
    # by hand: per-head LayerNorm of q and k (gains 1, biases 0), then softmax(qkᵀ/√d) with both masks
    e, h, d = 8, 2, 4
    q, k, v = (torch.nn.functional.linear(x, mha.in_proj_weight[j * e:(j + 1) * e], mha.in_proj_bias[j * e:(j + 1) * e])
               .view(3, 5, h, d).transpose(1, 2) for j in range(3))
    q, k = (torch.nn.functional.layer_norm(t, (d,)) for t in (q, k))
    z = q @ k.transpose(-2, -1) / d ** 0.5 + causal
    z = z.masked_fill(pad[:, None, None, :], float("-inf"))
    ref = mha.out_proj((z.softmax(-1) @ v).transpose(1, 2).reshape(3, 5, e))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)


def test_qk_layernorm_surgery_keeps_parameters_and_trains():
    model = _encoder()
    s = apply_remedy(model, "qk_layernorm")
    assert [e.action for e in s.edits] == ["qk-layernorm", "qk-layernorm"]
    assert isinstance(model[0].layers[0].self_attn, nn.MultiheadAttention)  # the original is untouched
    new = s.model[0].layers[0]
    assert isinstance(new.self_attn, QKNormAttention)
    old_ids = {id(p) for p in s.model.parameters()} - {id(p) for m in s.model.modules() if isinstance(m, QKNormAttention)
                                                         for p in (*m.q_norm.parameters(), *m.k_norm.parameters())}
    assert len(old_ids) == len(list(model.parameters()))
    x = torch.randn(4, 6, 16)
    loss = s.model(x).pow(2).mean()
    loss.backward()
    assert new.self_attn.q_norm.weight.grad is not None and new.self_attn.mha.in_proj_weight.grad is not None
    s.model.eval()
    with torch.no_grad():  # eval fast paths stay off: they would skip the norms
        assert torch.isfinite(s.model(x)).all()


def test_pre_ln_flips_norm_first_and_refuses_what_it_cannot_do():
    s = apply_remedy(_encoder(), "pre_ln")
    assert all(layer.norm_first for layer in s.model[0].layers)
    with pytest.raises(RemedyError, match="post-LN"):
        apply_remedy(_encoder(norm_first=True), "pre_ln")
    with pytest.raises(RemedyError, match="no nn.MultiheadAttention"):
        apply_remedy(nn.Linear(3, 3), "qk_layernorm")
    with pytest.raises(RemedyError, match="training loop"):
        apply_remedy(_encoder(), "z_loss")


def test_after_qk_layernorm_watch_still_records_the_attention_logits_at_the_wrapper():
    import graddoctor

    s = apply_remedy(_encoder(), "qk_layernorm")
    opt = torch.optim.SGD(s.model.parameters(), lr=0.01)
    with graddoctor.watch(s.model, opt, full_every=1, attention_every=1) as run:
        for _ in range(2):
            loss = s.model(torch.randn(4, 6, 16)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    view = graddoctor.load(run)
    sites = ["0.layers.0.self_attn", "0.layers.1.self_attn"]  # the QKNormAttention wrappers
    for site in sites:
        logits = view.stat("attn_logit_max", site)
        assert len(logits) == 2 and torch.isfinite(torch.as_tensor(logits)).all(), site
