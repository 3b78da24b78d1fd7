"""transformers' GPT-2 (GPT2Config, tiny, no weights): tied lm_head recorded, attention read through
SDPA and eager, NewGELUActivation an activation, Conv1D affine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graddoctor

from .gpt import train

transformers = pytest.importorskip("transformers")


def gpt2(attn: str = "sdpa", layers: int = 2):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=32, n_layer=layers, n_head=4,
                                     attn_implementation=attn, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_gpt2_tiny_records_logits_attention_and_families(attn):
    model = gpt2(attn)
    assert model.lm_head.weight is model.transformer.wte.weight
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with graddoctor.watch(model, opt, attention_every=1) as run:
        train(model, run, steps=3, lr=1e-3)
    view = graddoctor.load(run)
    info = {i.name: i for i in view.layer_info}
    assert info["lm_head"].n_params == 0 and np.isfinite(view.stat("logit_lse_mean", "lm_head")).all()
    assert (view.stat("logit_lse_mean", "lm_head") > np.log(32) - 0.5).all()  # near log(vocab) at init
    assert info["transformer.h.0.mlp.act"].kind == "activation"  # NewGELUActivation
    assert "transformer.h.0.mlp.c_fc" in view.layers
    assert np.isnan(view.stat("dead_frac", "transformer.h.0.mlp.c_fc")).all()  # Conv1D is affine: no dead units
    for i in range(2):
        name = f"transformer.h.{i}.attn"
        assert info[name].kind == "attention"
        ent = view.stat("attn_entropy", name)
        # causal attention over 16 positions: at init close to uniform, mean of log(1..16) = 1.84 nats
        assert np.all((ent > 1.0) & (ent <= np.mean(np.log(np.arange(1, 17))) + 1e-6))
        assert np.isfinite(view.stat("attn_logit_max", name)).all()


def test_gpt2_sdpa_and_eager_agree():
    views = []
    for attn in ("sdpa", "eager"):
        model = gpt2(attn)
        with graddoctor.watch(model, torch.optim.SGD(model.parameters(), lr=0.0), attention_every=1) as run:
            train(model, run, steps=1, lr=0.0)
        views.append(graddoctor.load(run))
    for stat in ("attn_logit_max", "attn_entropy", "attn_entropy_min_head"):
        a, b = (v.stat(stat, "transformer.h.1.attn")[0] for v in views)
        assert a == pytest.approx(b, rel=1e-4)


def test_transformer_encoder_layer_multihead_attention_is_read():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = torch.nn.Sequential(layer, torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graddoctor.watch(model, opt, attention_every=1) as run:
        for _ in range(2):
            loss = model(torch.randn(4, 6, 16)).pow(2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
    view = graddoctor.load(run)
    ent = view.stat("attn_entropy", "0.self_attn")
    assert np.all((ent > 0) & (ent <= np.log(6) + 1e-6))
