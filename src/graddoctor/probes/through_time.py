"""Gradient flow through time: per-time-step gradient norms of recurrent layers (docs/through-time.md).

For every `nn.RNN`/`nn.LSTM`/`nn.GRU` (any `nn.RNNBase`) the watch records, on recorded steps,
||dL/dx_t|| (the gradient at the module's input at time step t, through the module only) and
||dL/dy_t|| (the gradient arriving at its output sequence at t), each summed over the batch and
the features in squares. For a cell (`nn.RNNCellBase`) called once per time step in a loop, call
number t of the step is time step t. Sequences longer than `MAX_BUCKETS` are kept as buckets of
consecutive steps, each the square root of the sum of its steps' squares.

Everything stays on the device until the step's one transfer (`TimeProbe.device_values`). A
model with no recurrent module gets no hook at all (`TimeProbe.for_plan` returns None).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from .select import LayerPlan

MAX_BUCKETS = 64
IN_GRAD = "in_grad_norm_t"      # ||dL/dx_t||: the gradient at the layer's input, per time step
OUT_GRAD = "out_grad_norm_t"    # ||dL/dy_t||: the gradient at the layer's output, per time step
BOUND_STATS = ("hh_radius", "hh_sigma_max", "hh_gamma")  # per recurrent matrix (and gate): theory.through_time


def bucket_edges(length: int, max_buckets: int = MAX_BUCKETS) -> list[int]:
    """Edges e_0=0 < ... < e_B=length: bucket b holds time steps e_b <= t < e_{b+1}.

    One step per bucket up to `max_buckets` steps; beyond, B = max_buckets buckets of
    floor((b+1)L/B) - floor(bL/B) steps each (sizes differ by at most one).
    """
    n = min(length, max_buckets)
    return [(b * length) // n for b in range(n + 1)] if n else [0]


def time_sumsq(grad: torch.Tensor, time_dim: int) -> torch.Tensor:
    """Per-time-step sum of squares of `grad` over every other dim, accumulated in float64.

    float64 keeps squares of gradients as small as 1e-150 (float32 squares underflow below ~1e-23,
    and an underflowed square would read as an exactly-zero step).
    """
    dims = [d for d in range(grad.ndim) if d != time_dim]
    return torch.linalg.vector_norm(grad, 2, dim=dims, dtype=torch.float64).square()


def packed_sumsq(data_grad: torch.Tensor, batch_sizes: torch.Tensor) -> torch.Tensor:
    """Per-time-step sum of squares for a PackedSequence's data (time-major rows, `batch_sizes[t]` at t)."""
    rows = torch.linalg.vector_norm(data_grad, 2, dim=list(range(1, data_grad.ndim)), dtype=torch.float64).square()
    t_of_row = torch.repeat_interleave(torch.arange(len(batch_sizes)), batch_sizes).to(rows.device, non_blocking=True)
    return torch.zeros(len(batch_sizes), dtype=torch.float64, device=rows.device).index_add_(0, t_of_row, rows)


def bucket_norms(sumsq: torch.Tensor, edges: list[int]) -> torch.Tensor:
    """sqrt of the sum of the squares in each bucket (on the device; no sync)."""
    if len(edges) - 1 == sumsq.numel():
        return sumsq.sqrt()
    sizes = torch.tensor(np.diff(edges), dtype=torch.long)
    index = torch.repeat_interleave(torch.arange(len(edges) - 1), sizes).to(sumsq.device, non_blocking=True)
    return torch.zeros(len(edges) - 1, dtype=sumsq.dtype, device=sumsq.device).index_add_(0, index, sumsq).sqrt()


@dataclasses.dataclass
class _Series:
    """One layer's per-step squares in the step in progress: a vector (sequence module) or one 0-d
    tensor per call (cell)."""

    vector: torch.Tensor | None = None
    calls: dict[int, torch.Tensor] = dataclasses.field(default_factory=dict)

    def add_vector(self, sq: torch.Tensor) -> None:
        if self.vector is None:
            self.vector = sq
        elif self.vector.shape == sq.shape:  # several calls of one length (micro-batches): summed
            self.vector = self.vector + sq
        # another length in the same step (rare): the first call's series is kept

    def add_call(self, t: int, sq: torch.Tensor) -> None:
        self.calls[t] = self.calls[t] + sq if t in self.calls else sq

    def sumsq(self) -> torch.Tensor | None:
        if self.vector is not None:
            return self.vector
        if not self.calls:
            return None
        n = max(self.calls) + 1
        zero = next(iter(self.calls.values())).new_zeros(())
        return torch.stack([self.calls.get(t, zero) for t in range(n)])


class _StepState:
    def __init__(self, rec: Any) -> None:
        self.rec = rec
        self.series: dict[tuple[int, str], _Series] = {}
        self.calls: dict[int, int] = {}  # cell: calls seen so far this step
        self.weights: dict[int, list[tuple[str, float, torch.Tensor]]] = {}  # bound steps: W_hh copies

    def series_of(self, i: int, stat: str) -> _Series:
        return self.series.setdefault((i, stat), _Series())


class TimeProbe:
    """Hooks on the recurrent layers of a plan; one `_StepState` per recorded step."""

    def __init__(self, layers: list[tuple[int, LayerPlan]], recording: Callable[[], Any]) -> None:
        self.layers = layers
        self._recording = recording  # the Run's current StepRecord (None on unrecorded steps)
        self._state: _StepState | None = None
        self._bound_step = True      # copy W_hh at the next recorded step (init, then a slow schedule)

    @classmethod
    def for_plan(cls, plan: list[LayerPlan], recording: Callable[[], Any]) -> "TimeProbe | None":
        layers = [(i, layer) for i, layer in enumerate(plan) if isinstance(layer.module, (nn.RNNBase, nn.RNNCellBase))]
        return cls(layers, recording) if layers else None

    def attach(self, add: Callable[[Any], None]) -> None:
        for i, layer in self.layers:
            add(layer.module.register_forward_pre_hook(functools.partial(self._on_input, i), with_kwargs=True))
            add(layer.module.register_forward_hook(functools.partial(self._on_output, i)))

    def begin(self, rec: Any, bound: bool) -> None:
        """A new step: recorded (`rec`) or not (None). `bound`: copy W_hh for the Pascanu bound."""
        self._state = _StepState(rec) if rec is not None else None
        self._bound_step = self._bound_step or bound

    # -- hooks ---------------------------------------------------------------------------------

    def _active(self, module: nn.Module) -> _StepState | None:
        state = self._state
        if state is None or state.rec is not self._recording() or not torch.is_grad_enabled() or not module.training:
            return None
        return state

    def _on_input(self, i: int, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        state = self._active(module)
        if state is None:
            return None
        if self._bound_step and i not in state.weights:
            state.weights[i] = _hh_copies(module)
        x = args[0] if args else kwargs.get("input")
        if isinstance(module, nn.RNNCellBase):
            t = state.calls.get(i, 0)
            state.calls[i] = t + 1
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                return None
            x = _probe_leaf(x)
            x.register_hook(functools.partial(self._on_cell_grad, state, i, IN_GRAD, t))
            return _replace_first(args, kwargs, x)
        if isinstance(x, PackedSequence):
            data = _probe_leaf(x.data)
            sizes = x.batch_sizes
            data.register_hook(lambda g: self._add(state, i, IN_GRAD, packed_sumsq(g.detach(), sizes)))
            return _replace_first(args, kwargs, PackedSequence(data, sizes, x.sorted_indices, x.unsorted_indices))
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return None
        x = _probe_leaf(x)
        time_dim = _time_dim(module, x)
        x.register_hook(lambda g: self._add(state, i, IN_GRAD, time_sumsq(g.detach(), time_dim)))
        return _replace_first(args, kwargs, x)

    def _on_output(self, i: int, module: nn.Module, inputs: Any, output: Any) -> None:
        state = self._active(module)
        if state is None:
            return
        if isinstance(module, nn.RNNCellBase):
            y = output[0] if isinstance(output, tuple) else output  # LSTMCell: (h, c)
            if isinstance(y, torch.Tensor) and y.requires_grad:
                y.register_hook(functools.partial(self._on_cell_grad, state, i, OUT_GRAD, state.calls[i] - 1))
            return
        y = output[0]
        if isinstance(y, PackedSequence):
            sizes = y.batch_sizes
            if y.data.requires_grad:
                y.data.register_hook(lambda g: self._add(state, i, OUT_GRAD, packed_sumsq(g.detach(), sizes)))
        elif isinstance(y, torch.Tensor) and y.requires_grad:
            time_dim = _time_dim(module, y)
            y.register_hook(lambda g: self._add(state, i, OUT_GRAD, time_sumsq(g.detach(), time_dim)))

    def _on_cell_grad(self, state: _StepState, i: int, stat: str, t: int, grad: torch.Tensor) -> None:
        if state is self._state:
            state.series_of(i, stat).add_call(t, grad.detach().to(torch.float64).square().sum())

    def _add(self, state: _StepState, i: int, stat: str, sq: torch.Tensor) -> None:
        if state is self._state:  # a backward run after its step closed is not this step's
            state.series_of(i, stat).add_vector(sq)

    # -- the step's transfer ---------------------------------------------------------------------

    def device_values(self) -> tuple[list[tuple], list[torch.Tensor]]:
        """(what each tensor is, the tensors) for the step's one transfer: bucketed norms and W_hh copies."""
        state, self._state = self._state, None
        if state is None:
            return [], []
        keys, tensors = [], []
        for (i, stat), series in state.series.items():
            sq = series.sumsq()
            if sq is None:
                continue
            edges = bucket_edges(int(sq.numel()))
            keys.append(("series", i, stat, edges))
            tensors.append(bucket_norms(sq, edges))
        for i, mats in state.weights.items():
            for label, gamma, w in mats:
                keys.append(("weight", i, label, gamma))
                tensors.append(w)
        if state.weights:
            self._bound_step = False
        return keys, tensors


def time_rows(step: int, keys: list[tuple], host: list[np.ndarray]) -> list[tuple[int, int, str, int, str, bytes]]:
    """Host values -> rows (step, layer index, stat, length, index_json, float32 blob); writer thread."""
    from .hh_bound import bound_rows

    rows = []
    weights: dict[int, list[tuple[str, float, np.ndarray]]] = {}
    for key, value in zip(keys, host):
        if key[0] == "series":
            _, i, stat, edges = key
            rows.append((step, i, stat, edges[-1], json.dumps(edges), np.asarray(value, np.float32).tobytes()))
        else:
            weights.setdefault(key[1], []).append((key[2], key[3], np.asarray(value)))
    for i, mats in weights.items():
        rows += [(step, i, *row) for row in bound_rows(mats)]
    return rows


def _probe_leaf(x: torch.Tensor) -> torch.Tensor:
    """The tensor the module will get instead of `x`: same values, and a gradient of its own.

    An alias (`view_as`) when `x` already takes part in autograd, so that its gradient is the share
    that flows through this module only; a detached leaf that requires grad when it does not (data,
    a frozen embedding), so that dL/dx_t exists at all (parameters' gradients are unchanged).
    """
    return x.view_as(x) if x.requires_grad else x.detach().requires_grad_(True)


def _replace_first(args: tuple, kwargs: dict, x: Any) -> tuple[tuple, dict]:
    if args:
        return (x, *args[1:]), kwargs
    return args, {**kwargs, "input": x}


def _time_dim(module: nn.Module, x: torch.Tensor) -> int:
    """Dim of the time steps: 0 unbatched (L, H_in) or time-major (L, N, H_in); 1 with batch_first."""
    return 1 if x.ndim == 3 and getattr(module, "batch_first", False) else 0


# Gates of each recurrent module, in PyTorch's stacking order of weight_hh, with the bound gamma of
# the derivative of the nonlinearity each block feeds (sigmoid' <= 1/4, tanh' <= 1, relu' <= 1).
GATES = {
    "LSTM": (("i", 0.25), ("f", 0.25), ("g", 1.0), ("o", 0.25)),
    "LSTMCell": (("i", 0.25), ("f", 0.25), ("g", 1.0), ("o", 0.25)),
    "GRU": (("r", 0.25), ("z", 0.25), ("n", 1.0)),
    "GRUCell": (("r", 0.25), ("z", 0.25), ("n", 1.0)),
}


def hh_matrices(module: nn.Module) -> list[tuple[str, float, torch.Tensor]]:
    """(label, gamma, block) for every recurrent weight block: 'l0.tanh' (an RNN's nonlinearity), 'l1_reverse.f' ..."""
    gates = GATES.get(type(module).__name__, ((getattr(module, "nonlinearity", "tanh"), 1.0),))  # RNN: 'tanh'/'relu'
    if isinstance(module, nn.RNNCellBase):
        names = [("", "weight_hh")]
    elif isinstance(module, nn.RNNBase):
        dirs = ("", "_reverse") if module.bidirectional else ("",)
        names = [(f"l{k}{d}", f"weight_hh_l{k}{d}") for k in range(module.num_layers) for d in dirs]
    else:
        return []
    out = []
    for prefix, pname in names:
        w = getattr(module, pname, None)
        if not isinstance(w, torch.Tensor):
            continue
        blocks = w.chunk(len(gates), dim=0) if w.shape[0] % len(gates) == 0 else [w]
        for (gate, gamma), block in zip(gates, blocks):
            label = f"{prefix}.{gate}" if prefix else gate
            out.append((label, gamma, block))
    return out


def _hh_copies(module: nn.Module) -> list[tuple[str, float, torch.Tensor]]:
    """Copies of the recurrent blocks before this step's update; they travel in the step's transfer."""
    return [(label, gamma, w.detach().clone()) for label, gamma, w in hh_matrices(module)]
