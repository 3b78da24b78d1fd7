"""Per-time-step gradient norms of recurrent layers against plain autograd (docs/through-time.md).

The reference runs the same model on the same batch without graddoctor, with the sequence fed to
the recurrent module as a retained tensor of its own (a leaf, or an alias when it already takes
part in autograd), and reads ||dL/dx_t||, ||dL/dy_t|| from `torch.autograd.grad` in float64 numpy.
Watching uses `run.step()` (no optimizer), so the weights are the same for both.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import graddoctor
from graddoctor.probes.through_time import MAX_BUCKETS, bucket_edges

RTOL = 1e-4


class SeqModel(nn.Module):
    """An embedding or float features -> recurrent module -> a loss at every (or the last) step."""

    def __init__(self, rnn: nn.Module, *, vocab: int | None = None, n_in: int = 3, last_only: bool = False,
                 skip: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, n_in) if vocab else None
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1), 2)
        self.last_only, self.skip = last_only, skip

    def forward(self, x, tap=None):
        if self.emb is not None:
            x = self.emb(x)
        xin = tap(x) if tap is not None else x
        y, _ = self.rnn(xin)
        if tap is not None:
            y = tap(y)
        out = self.head(y)
        if self.skip:  # the input also reaches the loss outside the recurrent module
            out = out + x.sum(-1, keepdim=True)
        t = 1 if self.rnn.batch_first else 0
        return out.select(t, -1) if self.last_only else out


def loss_of(out):
    return out.pow(2).mean()


def reference(model, x):
    """(||dL/dx_t||, ||dL/dy_t||) per time step, from autograd on retained tensors, float64."""
    taps = []

    def tap(t):
        t = t.view_as(t) if t.requires_grad else t.detach().requires_grad_(True)
        taps.append(t)
        return t

    loss = loss_of(model(x, tap=tap))
    gx, gy = torch.autograd.grad(loss, taps, allow_unused=True)
    tdim = 1 if model.rnn.batch_first else 0
    return tuple(_per_t(g, tdim) for g in (gx, gy))


def _per_t(g, tdim):
    g = g.detach().double().numpy()
    dims = tuple(d for d in range(g.ndim) if d != tdim)
    return np.sqrt((g ** 2).sum(axis=dims))


def bucketed(per_t):
    e = bucket_edges(len(per_t))
    return np.array([np.sqrt((per_t[a:b] ** 2).sum()) for a, b in zip(e[:-1], e[1:])])


def watched(model, x):
    ref = copy.deepcopy(model)
    with graddoctor.watch(model) as run:
        loss_of(model(x)).backward()
        run.step()
    view = graddoctor.load(run)
    return view, ref


CASES = {
    "rnn_batch_first": lambda: (nn.RNN(3, 8, batch_first=True), (4, 30, 3)),
    "rnn_time_major": lambda: (nn.RNN(3, 8), (30, 4, 3)),
    "rnn_relu_unbatched": lambda: (nn.RNN(3, 8, nonlinearity="relu"), (30, 3)),
    "lstm_2_layers": lambda: (nn.LSTM(3, 8, num_layers=2, batch_first=True), (4, 20, 3)),
    "gru_bidirectional": lambda: (nn.GRU(3, 8, bidirectional=True, batch_first=True), (4, 20, 3)),
    "rnn_long_bucketed": lambda: (nn.RNN(3, 8, batch_first=True), (2, 150, 3)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("last_only", [False, True])
def test_per_step_norms_match_autograd(case, last_only):
    rnn, shape = CASES[case]()
    model = SeqModel(rnn, last_only=last_only)
    x = torch.randn(*shape)
    view, ref = watched(model, x)
    want_in, want_out = reference(ref, x)
    got_in, edges = view.time_stat("in_grad_norm_t", "rnn")
    got_out, _ = view.time_stat("out_grad_norm_t", "rnn")
    T = shape[1] if rnn.batch_first else shape[0]
    assert list(edges) == bucket_edges(T) and len(edges) - 1 == min(T, MAX_BUCKETS)
    np.testing.assert_allclose(got_in[0], bucketed(want_in), rtol=RTOL, atol=1e-30)
    np.testing.assert_allclose(got_out[0], bucketed(want_out), rtol=RTOL, atol=1e-30)
    if last_only:  # the loss sits at the last step: nothing else arrives at the output
        assert got_out[0][-1] > 0 and np.all(got_out[0][:-1] == 0)


def test_embedding_input_counts_only_the_flow_through_the_recurrent_module():
    """The embedding output also reaches the loss through a skip: dL/dx_t is the recurrent share."""
    model = SeqModel(nn.GRU(5, 8, batch_first=True), vocab=11, n_in=5, skip=True)
    tokens = torch.randint(0, 11, (4, 25))
    view, ref = watched(model, tokens)
    want_in, _ = reference(ref, tokens)
    got, _ = view.time_stat("in_grad_norm_t", "rnn")
    np.testing.assert_allclose(got[0], want_in, rtol=RTOL)
    # the full gradient of the embedding output differs (it includes the skip): the test can fail
    x = ref.emb(tokens)
    full = torch.autograd.grad(loss_of(ref.head(ref.rnn(x)[0]) + x.sum(-1, keepdim=True)), x)[0]
    assert not np.allclose(_per_t(full, 1), want_in, rtol=1e-2)


class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 6, batch_first=True)
        self.head = nn.Linear(6, 1)

    def forward(self, x, lengths, tap=None):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        if tap is not None:
            packed = torch.nn.utils.rnn.PackedSequence(tap(packed.data), packed.batch_sizes, packed.sorted_indices,
                                                       packed.unsorted_indices)
        y, _ = self.rnn(packed)
        if tap is not None:
            y = torch.nn.utils.rnn.PackedSequence(tap(y.data), y.batch_sizes, y.sorted_indices, y.unsorted_indices)
        out, _ = pad_packed_sequence(y, batch_first=True)
        return self.head(out).pow(2).sum()


def test_packed_sequence_time_steps_are_the_padded_positions():
    model = Packed()
    x, lengths = torch.randn(4, 12, 3), torch.tensor([12, 5, 9, 3])
    ref = copy.deepcopy(model)
    with graddoctor.watch(model) as run:
        model(x, lengths).backward()
        run.step()
    got_in, _ = graddoctor.load(run).time_stat("in_grad_norm_t", "rnn")
    got_out, _ = graddoctor.load(run).time_stat("out_grad_norm_t", "rnn")
    taps = []

    def tap(t):
        t = t.detach().requires_grad_(True) if not t.requires_grad else t.view_as(t)
        taps.append(t)
        return t

    gx, gy = torch.autograd.grad(ref(x, lengths, tap=tap), taps)
    sizes = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False).batch_sizes
    for got, g in ((got_in, gx), (got_out, gy)):
        rows = np.split(g.double().numpy(), np.cumsum(sizes.numpy())[:-1])
        want = np.array([np.sqrt((r ** 2).sum()) for r in rows])
        np.testing.assert_allclose(got[0], want, rtol=RTOL)


class CellLoop(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.cell, self.head = cell, nn.Linear(cell.hidden_size, 1)

    def forward(self, x, taps=None):
        h = None
        outs = []
        for t in range(x.shape[1]):
            xt = x[:, t]
            if taps is not None:
                xt = xt.detach().requires_grad_(True)
                taps[0].append(xt)
            h = self.cell(xt, h)
            ht = h[0] if isinstance(h, tuple) else h
            if taps is not None:
                taps[1].append(ht)
            outs.append(self.head(ht))
        return torch.stack(outs, 1).pow(2).mean()


@pytest.mark.parametrize("cell", [nn.RNNCell, nn.LSTMCell, nn.GRUCell])
def test_cell_called_once_per_step_call_index_is_time(cell):
    model = CellLoop(cell(3, 7))
    x = torch.randn(4, 15, 3)
    ref = copy.deepcopy(model)
    with graddoctor.watch(model) as run:
        model(x).backward()
        run.step()
    view = graddoctor.load(run)
    taps = ([], [])
    loss = ref(x, taps)
    gx = torch.autograd.grad(loss, taps[0] + taps[1])
    want_in = [float(g.double().norm()) for g in gx[:15]]
    want_out = [float(g.double().norm()) for g in gx[15:]]  # dL/dh_t: head at t and the later steps
    np.testing.assert_allclose(view.time_stat("in_grad_norm_t", "cell")[0][0], want_in, rtol=RTOL)
    np.testing.assert_allclose(view.time_stat("out_grad_norm_t", "cell")[0][0], want_out, rtol=RTOL)


def test_bound_matches_numpy_eig_and_svd_per_gate_and_layer():
    rnn = nn.LSTM(3, 6, num_layers=2)
    model = SeqModel(rnn)
    view, _ = watched(model, torch.randn(10, 2, 3))
    radius, labels = view.time_stat("hh_radius", "rnn")
    sigma, _ = view.time_stat("hh_sigma_max", "rnn")
    gamma, _ = view.time_stat("hh_gamma", "rnn")
    assert labels == ("l0.i", "l0.f", "l0.g", "l0.o", "l1.i", "l1.f", "l1.g", "l1.o")
    for k, label in enumerate(labels):
        layer, gate = label.split(".")
        w = getattr(rnn, f"weight_hh_{layer}").detach().double().numpy()
        block = w[("ifgo".index(gate)) * 6:("ifgo".index(gate) + 1) * 6]
        np.testing.assert_allclose(radius[0, k], np.abs(np.linalg.eigvals(block)).max(), rtol=1e-5)
        np.testing.assert_allclose(sigma[0, k], np.linalg.svd(block, compute_uv=False)[0], rtol=1e-5)
        assert gamma[0, k] == (1.0 if gate == "g" else 0.25)


def test_bound_at_init_then_on_the_histogram_schedule():
    model = SeqModel(nn.RNN(3, 5, batch_first=True))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    w0 = model.rnn.weight_hh_l0.detach().double().numpy().copy()
    with graddoctor.watch(model, opt, hist_every=4) as run:
        for _ in range(6):
            opt.zero_grad()
            loss_of(model(torch.randn(2, 8, 3))).backward()
            opt.step()
    radius, _ = graddoctor.load(run).time_stat("hh_radius", "rnn")
    assert np.isfinite(radius[:, 0]).tolist() == [True, False, False, False, True, False]
    np.testing.assert_allclose(radius[0, 0], np.abs(np.linalg.eigvals(w0)).max(), rtol=1e-5)  # before the update
    assert radius[4, 0] != pytest.approx(radius[0, 0])


def test_no_recurrent_layer_no_hook_and_no_rows():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    with graddoctor.watch(model) as run:
        assert run._time is None
        assert all(not m._forward_pre_hooks for m in model.modules())
        model(torch.randn(2, 3)).sum().backward()
        run.step()
    assert graddoctor.load(run).time_layers() == []


def test_leaves_no_trace_and_same_losses():
    def train(watch):
        torch.manual_seed(1)
        model = SeqModel(nn.LSTM(3, 6, batch_first=True))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        ctx = graddoctor.watch(model, opt) if watch else None
        for _ in range(4):
            opt.zero_grad()
            loss = loss_of(model(torch.randn(3, 9, 3)))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if ctx is not None:
            ctx.close()
            assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
        return losses

    assert train(True) == train(False)


def test_a_store_without_the_table_reads_as_not_recorded(tmp_path):
    path = tmp_path / "old.db"
    model = SeqModel(nn.RNN(3, 4))
    with graddoctor.watch(model, store=path) as run:
        loss_of(model(torch.randn(5, 2, 3))).backward()
        run.step()
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("DROP TABLE time_stats")
    con.commit()
    con.close()
    view = graddoctor.load(str(path))
    assert view.time_layers() == [] and view.time_stat("in_grad_norm_t", "rnn")[0].shape == (1, 0)
    assert json.loads(json.dumps(view.stats))  # the rest reads as before
