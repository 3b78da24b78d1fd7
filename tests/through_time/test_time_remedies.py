"""Remedies that reach recurrent models, and compare keeping integer token ids (docs/through-time.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from graddoctor.data import as_dataset, split
from graddoctor.remedies.surgery import RemedyError, apply_remedy, swap_cell


class Recall(nn.Module):
    def __init__(self, reads_h: bool = False, relu: bool = False):
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.rnn = nn.RNN(4, 8, num_layers=2, batch_first=True, nonlinearity="relu" if relu else "tanh")
        self.head = nn.Linear(8, 6)
        self.reads_h = reads_h

    def forward(self, tokens):
        y, h = self.rnn(self.emb(tokens))
        return self.head(h[-1] if self.reads_h else y[:, -1])


def test_swap_cell_keeps_sizes_and_forward():
    model = Recall()
    tokens = torch.randint(0, 6, (3, 7))
    s = apply_remedy(model, "swap_cell", data=tokens)
    new = s.model.rnn
    assert type(new) is nn.LSTM and (new.input_size, new.hidden_size, new.num_layers, new.batch_first) == (4, 8, 2, True)
    assert s.model(tokens).shape == (3, 6) and type(model.rnn) is nn.RNN  # the original is untouched
    assert s.model.emb.weight.data_ptr() != model.emb.weight.data_ptr()  # a copy


def test_swap_cell_lstm_gate_biases_chrono_for_the_data_length_else_forget_bias_1():
    torch.manual_seed(0)
    s = apply_remedy(Recall(), "swap_cell", data=torch.randint(0, 6, (3, 30)))
    assert "chrono init for T = 30" in str(s.edits)
    h = 8
    for layer in (0, 1):  # every stacked layer: forget bias in [log 1, log 29], input bias its negative
        b_ih, b_hh = getattr(s.model.rnn, f"bias_ih_l{layer}"), getattr(s.model.rnn, f"bias_hh_l{layer}")
        b_f = b_ih[h:2 * h].detach()
        assert float(b_f.min()) >= 0.0 and float(b_f.max()) <= float(np.log(29)) + 1e-6 and float(b_f.std()) > 0.1
        assert torch.equal(b_ih[:h], -b_f) and not b_hh[:2 * h].any()

    class TimeMajor(nn.Module):  # samples first in the data, (T, N, F) into the RNN: the length is its dim 0
        def __init__(self):
            super().__init__()
            self.emb, self.rnn = nn.Embedding(6, 4), nn.RNN(4, 8)

        def forward(self, tokens):
            return self.rnn(self.emb(tokens).transpose(0, 1))[0][-1]

    assert "chrono init for T = 12" in str(swap_cell(TimeMajor(), data=torch.randint(0, 6, (3, 12))).edits)
    plain = apply_remedy(Recall(), "swap_cell")  # no data: no length to read
    assert "forget bias 1" in str(plain.edits)
    assert torch.all(plain.model.rnn.bias_ih_l0[h:2 * h] == 1.0) and not plain.model.rnn.bias_hh_l0[:2 * h].any()


def test_swap_cell_falls_back_to_gru_when_the_forward_reads_h():
    model = Recall(reads_h=True)
    tokens = torch.randint(0, 6, (3, 7))
    with pytest.raises(RemedyError, match="h_n"):
        swap_cell(model, "lstm", data=tokens)
    s = apply_remedy(model, "swap_cell", data=tokens)
    assert type(s.model.rnn) is nn.GRU and "GRU" in str(s.edits[0]) and s.model(tokens).shape == (3, 6)


def test_swap_cell_refuses_without_an_rnn_and_for_lstm_cells():
    with pytest.raises(RemedyError, match="no nn.RNN"):
        swap_cell(nn.Sequential(nn.Linear(2, 2)))

    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.RNNCell(2, 3)

    with pytest.raises(RemedyError, match="GRUCell"):
        swap_cell(Loop(), "lstm")
    assert type(swap_cell(Loop(), "gru").model.cell) is nn.GRUCell


def test_orthogonal_init_makes_every_hh_block_orthogonal():
    model = nn.Sequential(nn.LSTM(3, 5, num_layers=2))
    s = apply_remedy(model, "orthogonal_init")
    for k in range(2):
        w = getattr(s.model[0], f"weight_hh_l{k}").detach().double()
        for block in w.chunk(4):
            np.testing.assert_allclose(block @ block.T, np.eye(5), atol=1e-5)
        assert torch.equal(getattr(s.model[0], f"weight_ih_l{k}"), getattr(model[0], f"weight_ih_l{k}"))
    with pytest.raises(RemedyError, match="no recurrent layer"):
        apply_remedy(nn.Sequential(nn.Linear(2, 2)), "orthogonal_init")


def test_identity_init_for_relu_rnns_only():
    s = apply_remedy(Recall(relu=True), "identity_init")
    assert torch.equal(s.model.rnn.weight_hh_l1, torch.eye(8)) and not s.model.rnn.bias_hh_l0.any()
    with pytest.raises(RemedyError, match="ReLU"):
        apply_remedy(Recall(), "identity_init")


def test_forget_bias():
    s = apply_remedy(nn.Sequential(nn.LSTM(3, 4)), "forget_bias")
    b = s.model[0].bias_ih_l0.detach()
    assert torch.all(b[4:8] == 1) and torch.all(s.model[0].bias_hh_l0[4:8] == 0)


@pytest.mark.parametrize("rid", ["xavier_init", "he_init"])
def test_xavier_and_he_cover_recurrent_weights(rid):
    model = Recall()
    s = apply_remedy(model, rid)
    layers = {e.layer for e in s.edits}
    assert {"rnn", "head"} <= layers  # the recurrent layer is not skipped
    w = s.model.rnn.weight_hh_l0.detach().double()
    np.testing.assert_allclose(w @ w.T, np.eye(8), atol=1e-5)
    assert not torch.equal(s.model.rnn.weight_ih_l0, model.rnn.weight_ih_l0)


@pytest.mark.parametrize("rid", ["critical_init"])
def test_feed_forward_only_schemes_refuse_recurrent_layers(rid):
    with pytest.raises(RemedyError, match="orthogonal_init"):
        apply_remedy(Recall(), rid)


def test_integer_inputs_stay_integer_token_ids():
    x = np.random.default_rng(0).integers(0, 50, size=(40, 9))
    y = x[:, 0] % 3
    data = split("tokens", x, y)
    assert data.x_train.dtype == torch.long and data.x_train.max() < 50 and data.x_train.min() >= 0
    assert set(data.x_train.flatten().tolist()) <= set(x.flatten().tolist())
    assert "integer ids" in data.describe()
    floats = split("floats", x.astype(np.float32), y)
    assert floats.x_train.dtype == torch.float32 and abs(float(floats.x_train.mean())) < 0.1  # standardised
    four = as_dataset((x[:30], y[:30], x[30:], y[30:]))
    assert four.x_train.dtype == torch.long


def test_compare_runs_an_embedding_model_on_integer_tokens(tmp_path):
    """Every listed remedy reaches the recurrent model; the measured comparison is in docs/through-time.md."""
    import sys
    from pathlib import Path

    import graddoctor

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tasks import EXAMPLES, recall

    x, y = recall.recall_data(64, length=12)
    path = tmp_path / "tokens.npz"
    np.savez(path, x=x, y=y)
    c = graddoctor.compare(f"{EXAMPLES / 'long_memory_rnn.py'}:rnn", str(path),
                           remedies=["swap_cell", "orthogonal_init", "grad_clip"], steps=3, seeds=1, jobs=1, progress=False)
    assert [v.name for v in c.variants] == ["original", "swap_cell", "orthogonal_init", "grad_clip"]
    assert "integer ids 0-7" in c.dataset
    assert all(np.isfinite(v.metric("test_accuracy")["mean"]) for v in c.variants)
