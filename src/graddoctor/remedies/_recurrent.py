"""Model surgery for recurrent layers: swap_cell, orthogonal_init, identity_init, forget_bias (docs/through-time.md).

Like every surgery, each edits a copy (unless `inplace`) and returns a `Surgery` listing its edits;
what cannot be done is refused with a `RemedyError` saying why.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._edits import Edit, RemedyError, Surgery, _dry_forward, _set_child, _target

CELLS = {"lstm": (nn.LSTM, nn.LSTMCell), "gru": (nn.GRU, nn.GRUCell)}


def recurrent_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))]


def swap_cell(model: nn.Module, to: str = "lstm", *, data: Any = None, inplace: bool = False) -> Surgery:
    """Replace every nn.RNN (nn.RNNCell) by an LSTM or GRU (cell) of the same sizes, layers, direction, layout.

    The new module is freshly initialised (PyTorch's default) except an LSTM's gate biases: PyTorch
    draws them near 0, so each forget gate starts at sigmoid(0) = 1/2 and the cell state, with its
    gradient, halves at every step. An nn.LSTM gets the chrono init (Tallec & Ollivier 2018) for the
    sequence length T that `data`'s forward feeds it: forget bias log(u), u ~ U[1, T - 1], input
    bias -log(u), so its units start with memory spans spread over 1..T steps; without `data` (or
    for T < 3) the forget bias is 1 (Gers et al. 2000; Jozefowicz et al. 2015). A GRU keeps PyTorch's init.

    An nn.GRU returns what an nn.RNN does, (output, h_n), so its forward always fits; an nn.LSTM
    returns (output, (h_n, c_n)) and an LSTMCell takes and returns (h, c), which a forward written
    for the RNN may not accept: with `data`, one forward pass checks it, and a failure is refused
    with what to do.

    Raises:
        RemedyError: `to` not 'lstm'/'gru', no nn.RNN/nn.RNNCell in the model, an LSTMCell asked
            for (a loop written for RNNCell passes h alone), or a forward that fails after the swap.
    """
    if to not in CELLS:
        raise RemedyError(f"swap_cell: to must be 'lstm' or 'gru', got {to!r}.")
    found = [(n, m) for n, m in recurrent_modules(model) if type(m) in (nn.RNN, nn.RNNCell)]
    if not found:
        kinds = sorted({type(m).__name__ for _, m in recurrent_modules(model)})
        raise RemedyError(f"swap_cell: {type(model).__name__} has no nn.RNN or nn.RNNCell to swap "
                          f"({'its recurrent layers are ' + ', '.join(kinds) if kinds else 'it has no recurrent layer'}).")
    if any(isinstance(m, nn.RNNCell) for _, m in found) and to == "lstm":
        raise RemedyError("swap_cell: an nn.LSTMCell takes and returns (h, c), so a loop written for nn.RNNCell "
                          "(h = cell(x_t, h)) cannot be kept; use to='gru' (nn.GRUCell has the RNNCell's call).")
    if found[0][0] == "":
        raise RemedyError("swap_cell: the model itself is the nn.RNN; build an nn.LSTM/nn.GRU instead.")
    target = _target(model, inplace)
    edits, swapped = [], []
    for name, old in [(n, m) for n, m in recurrent_modules(target) if type(m) in (nn.RNN, nn.RNNCell)]:
        new = _like(old, to)
        _set_child(target, name, new)
        swapped.append((name, new))
        edits.append(Edit(name, "swap cell", f"{type(old).__name__} -> {type(new).__name__} ({_sizes(old)})"))
    lengths: dict[nn.Module, int] = {}
    if data is not None:
        _check_forward(model, target, data[:2], f"{type(found[0][1]).__name__} -> {CELLS[to][0].__name__}",
                       lengths=lengths)
    for name, new in swapped:
        if isinstance(new, nn.LSTM):  # (an RNNCell is never swapped to an LSTMCell: refused above)
            edits.append(Edit(name, "gate biases", _lstm_gate_biases(new, lengths.get(new))))
    return Surgery(target, tuple(edits))


CHRONO_MIN_LENGTH = 3    # chrono init needs T - 1 > 1; shorter (or unknown) sequences get forget bias 1
FORGET_BIAS = 1.0        # Gers et al. 2000; Jozefowicz et al. 2015


def _lstm_gate_biases(m: nn.Module, length: int | None) -> str:
    """Chrono init for a sequence of `length` steps, or forget bias 1; returns what was done, in words.

    PyTorch's gate order is i, f, g, o; the values go into bias_ih, and the i and f blocks of bias_hh are 0.
    """
    chrono = length is not None and length >= CHRONO_MIN_LENGTH
    with torch.no_grad():
        for pname, p in m.named_parameters(recurse=False):
            if not pname.startswith("bias_"):
                continue
            h = p.shape[0] // 4
            if pname.startswith("bias_hh"):
                p[:2 * h] = 0.0
            elif chrono:
                b_f = torch.log(torch.empty(h, dtype=p.dtype, device=p.device).uniform_(1.0, float(length - 1)))
                p[h:2 * h], p[:h] = b_f, -b_f
            else:
                p[h:2 * h] = FORGET_BIAS
    if not m.bias:
        return "no biases: gates keep PyTorch's init"
    if chrono:
        return (f"chrono init for T = {length} (Tallec & Ollivier 2018): forget bias log(u), input bias -log(u), "
                f"u ~ U[1, {length - 1}]")
    why = "no data to read the sequence length from" if length is None else f"T = {length} is too short for chrono init"
    return f"forget bias {FORGET_BIAS:g} ({why}; Gers et al. 2000)"


def _check_forward(model: nn.Module, swapped: nn.Module, x: Any, what: str, lengths: dict[nn.Module, int]) -> None:
    """Refuse a swap after which the forward fails or returns another shape than before; note in `lengths`
    the sequence length each recurrent module of `swapped` was fed."""
    def note_length(mod: nn.Module, inputs: tuple, _out: Any) -> None:  # returns None: the output is kept
        lengths.setdefault(mod, _time_length(mod, inputs))

    hooks = [(m, note_length) for _, m in recurrent_modules(swapped) if isinstance(m, nn.RNNBase)]
    with torch.no_grad():
        before = _dry_forward(model, x)
        try:
            after = _dry_forward(swapped, x, hooks)
            problem = None if _shape(after) == _shape(before) else f"returns shape {_shape(after)} instead of {_shape(before)}"
        except Exception as err:
            problem = f"fails ({type(err).__name__}: {err})"
    if problem is not None:
        raise RemedyError(
            f"swap_cell: after {what} the forward {problem}; it probably reads the RNN's hidden state h_n, which an "
            f"LSTM returns as (h_n, c_n). Use to='gru' (same outputs as nn.RNN) or adapt the forward."
        )


def _time_length(m: nn.Module, inputs: tuple) -> int | None:
    """Time steps of an nn.RNNBase's input: dim 1 if batch_first and batched, else dim 0; a PackedSequence's longest."""
    x = inputs[0] if inputs else None
    if isinstance(x, nn.utils.rnn.PackedSequence):
        return int(len(x.batch_sizes))
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
        return None
    return int(x.shape[1] if (x.dim() == 3 and m.batch_first) else x.shape[0])


def _shape(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(_shape(o) for o in out)
    return type(out).__name__


def _like(old: nn.Module, to: str) -> nn.Module:
    seq_cls, cell_cls = CELLS[to]
    p = next(old.parameters())
    factory = {"device": p.device, "dtype": p.dtype}
    if isinstance(old, nn.RNNCell):
        return cell_cls(old.input_size, old.hidden_size, bias=old.bias, **factory)
    return seq_cls(old.input_size, old.hidden_size, num_layers=old.num_layers, bias=old.bias,
                   batch_first=old.batch_first, dropout=old.dropout, bidirectional=old.bidirectional, **factory)


def _sizes(m: nn.Module) -> str:
    text = f"input {m.input_size}, hidden {m.hidden_size}"
    if isinstance(m, nn.RNNBase):
        text += f", {m.num_layers} layer(s){', bidirectional' if m.bidirectional else ''}, batch_first={m.batch_first}"
    return text


def _hh_names(m: nn.Module) -> list[str]:
    return [n for n, _ in m.named_parameters(recurse=False) if n.startswith("weight_hh")]


def _gates(m: nn.Module) -> int:
    return {nn.LSTM: 4, nn.LSTMCell: 4, nn.GRU: 3, nn.GRUCell: 3}.get(type(m), 1)


def orthogonal_hh(model: nn.Module, *, inplace: bool = False) -> Surgery:
    """nn.init.orthogonal_ on every gate block of every W_hh; input weights and biases kept.

    Raises:
        RemedyError: no recurrent layer, or none with a trainable W_hh.
    """
    target = _target(model, inplace)
    edits = []
    with torch.no_grad():
        for name, m in recurrent_modules(target):
            for pname in _hh_names(m):
                w = getattr(m, pname)
                if not w.requires_grad:
                    continue
                for block in w.chunk(_gates(m), dim=0):
                    nn.init.orthogonal_(block)
                edits.append(Edit(name, "re-init (orthogonal W_hh)", f"{pname}: {_gates(m)} orthogonal block(s) of {list(w.shape)}"))
    if not edits:
        raise RemedyError(f"orthogonal_init: {type(model).__name__} has no recurrent layer (nn.RNN/LSTM/GRU or a cell) "
                          "with a trainable W_hh; for feed-forward layers use he_init or xavier_init.")
    return Surgery(target, tuple(edits))


def identity_hh(model: nn.Module, *, inplace: bool = False) -> Surgery:
    """IRNN (Le et al. 2015): W_hh = I and the biases 0 in every ReLU nn.RNN / nn.RNNCell.

    Raises:
        RemedyError: no ReLU RNN (a tanh RNN or a gated cell: identity init is for ReLU units).
    """
    found = [(n, m) for n, m in recurrent_modules(model) if type(m) in (nn.RNN, nn.RNNCell) and m.nonlinearity == "relu"]
    if not found:
        raise RemedyError("identity_init is for ReLU RNNs (nn.RNN(nonlinearity='relu')): this model has none; "
                          "use orthogonal_init for tanh RNNs and gated cells.")
    target = _target(model, inplace)
    edits = []
    with torch.no_grad():
        for name, m in recurrent_modules(target):
            if type(m) not in (nn.RNN, nn.RNNCell) or m.nonlinearity != "relu":
                continue
            for pname, p in m.named_parameters(recurse=False):
                if pname.startswith("weight_hh"):
                    p.copy_(torch.eye(*p.shape, dtype=p.dtype, device=p.device))
                elif pname.startswith("bias"):
                    p.zero_()
            edits.append(Edit(name, "re-init (identity W_hh)", "W_hh = I, biases 0 (IRNN)"))
    return Surgery(target, tuple(edits))


def forget_bias(model: nn.Module, value: float = 1.0, *, inplace: bool = False) -> Surgery:
    """Forget-gate bias `value` in every LSTM (the forget block of bias_ih; that of bias_hh set to 0).

    Raises:
        RemedyError: no nn.LSTM / nn.LSTMCell with biases.
    """
    target = _target(model, inplace)
    edits = []
    with torch.no_grad():
        for name, m in recurrent_modules(target):
            if not isinstance(m, (nn.LSTM, nn.LSTMCell)) or not m.bias:
                continue
            for pname, p in m.named_parameters(recurse=False):
                if pname.startswith("bias_"):
                    h = p.shape[0] // 4
                    p[h:2 * h] = value if pname.startswith("bias_ih") else 0.0
            edits.append(Edit(name, "forget-gate bias", f"b_f = {value:g} (bias_ih), 0 (bias_hh)"))
    if not edits:
        raise RemedyError("forget_bias needs an nn.LSTM or nn.LSTMCell with biases; this model has none.")
    return Surgery(target, tuple(edits))


def recurrent_reinit(target: nn.Module, scheme: str, he_gain2: float = 2.0) -> tuple[Edit, ...]:
    """he/xavier for recurrent layers: W_ih (each gate block) drawn by the scheme, W_hh orthogonal, biases 0.

    he: N(0, he_gain2 / fan_in); xavier: N(0, gain^2 * 2 / (fan_in + fan_out)) with the gain of the
    nonlinearity the block feeds (tanh RNN 5/3, ReLU RNN sqrt 2, gated cells 1). The scheme's variance
    keeps a feed-forward map's gradient; through time the same W_hh is applied at every step, where
    only singular values of 1 keep it (Saxe et al. 2014): W_hh is drawn orthogonal instead.
    """
    edits = []
    with torch.no_grad():
        for name, m in recurrent_modules(target):
            done = []
            for pname, p in m.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                if pname.startswith("weight_ih"):
                    var = _ih_variance(m, p, scheme, he_gain2)
                    nn.init.normal_(p, 0.0, var ** 0.5)
                    done.append(f"{pname} ~ N(0, {var:.4g}) ({scheme})")
                elif pname.startswith("weight_hh"):
                    for block in p.chunk(_gates(m), dim=0):
                        nn.init.orthogonal_(block)
                    done.append(f"{pname} orthogonal")
                elif pname.startswith("bias"):
                    p.zero_()
            if done:
                edits.append(Edit(name, f"re-init ({scheme}, recurrent)", "; ".join(done) + "; biases 0"))
    return tuple(edits)


def _ih_variance(m: nn.Module, w: torch.Tensor, scheme: str, he_gain2: float) -> float:
    fan_in, fan_out = w.shape[1], w.shape[0] // _gates(m)
    if scheme == "he":
        return he_gain2 / fan_in
    gain = {"tanh": 5.0 / 3.0, "relu": 2.0 ** 0.5}.get(getattr(m, "nonlinearity", ""), 1.0)
    return gain ** 2 * 2.0 / (fan_in + fan_out)
