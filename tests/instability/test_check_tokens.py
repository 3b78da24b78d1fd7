"""`graddoctor check --input-shape 8,64 --vocab 100` on transformers that take token ids (issue 14, item 7):
random ids in, one label per position for a (batch, length, vocab) output, nothing above info at init."""

from __future__ import annotations

import textwrap

import pytest
import torch

import graddoctor
from graddoctor.cli import main
from graddoctor.cli._check import check_spec

FACTORY = textwrap.dedent('''
    import torch
    from torch import nn

    class TinyLM(nn.Module):
        def __init__(self, vocab=100, width=32):
            super().__init__()
            self.emb = nn.Embedding(vocab, width)
            layer = nn.TransformerEncoderLayer(width, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(width, vocab)

        def forward(self, tokens):
            return self.head(self.enc(self.emb(tokens)))

    def tiny():
        torch.manual_seed(0)
        return TinyLM()

    def gpt2():
        import transformers
        config = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        torch.manual_seed(0)
        return transformers.GPT2LMHeadModel(config)
''')


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "lm.py"
    path.write_text(FACTORY)
    return str(path)


def test_check_vocab_on_a_transformer_lm_labels_every_position(spec, capsys):
    d = check_spec(f"{spec}:tiny", input_shape="8,64", vocab=100, steps=3)
    assert any("integer token ids in [0, 100) of shape (8, 64)" in n for n in d.notes), d.notes
    assert any("random labels in [0, 100) per position" in n for n in d.notes), d.notes  # not 64 'classes' on dim 1
    assert not d.reaches("warning"), str(d)
    assert main(["check", f"{spec}:tiny", "--input-shape", "8,64", "--vocab", "100", "--steps", "2"]) == 0
    assert "per position" in capsys.readouterr().out


def test_check_with_given_next_token_targets_uses_the_last_dimension():
    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(20, 8), torch.nn.Linear(8, 20)
    model = torch.nn.Sequential(emb, torch.nn.Tanh(), head)
    x = torch.randint(0, 20, (4, 12))
    d = graddoctor.check(model, (x, torch.roll(x, -1, dims=1)), steps=2)  # (N, T) targets for (N, T, V) logits
    assert d.run["n_steps"] == 2 and not d.reaches("error")


def test_check_vocab_on_hugging_face_gpt2(spec):
    pytest.importorskip("transformers")
    d = check_spec(f"{spec}:gpt2", input_shape="8,64", vocab=100, steps=3)
    assert any("per position" in n for n in d.notes), d.notes
    assert not d.reaches("warning"), str(d)
