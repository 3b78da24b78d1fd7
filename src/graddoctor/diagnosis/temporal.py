"""The temporal probe of `graddoctor check`: ||d l_T / d x_t|| for every time step t (docs/through-time.md).

l_T is the loss at the last position only. Rather than guess the layout of the model's output,
the probe back-propagates the full loss L to each recurrent layer's output sequence y, keeps
dL/dy at the last time step alone, and back-propagates that to the layer's input: for a head
applied position by position that is exactly d l_T / d x_t, and for a model that reads only the
last step it is dL/dx_t itself. One forward and one extra backward (the second from y_T only).
The gradient through other paths (an input that also skips the recurrent layer) is left out.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from ..probes.through_time import _probe_leaf, _replace_first, _time_dim, bucket_edges, bucket_norms, time_sumsq

PROBE = "in_grad_norm_t_last"  # ||d l_T / d x_t||: the gradient of the last position's loss at the input, per t


def temporal_probe(model: nn.Module, forward: Callable[[], Any], loss_of: Callable[[Any], torch.Tensor]
                   ) -> dict[str, tuple[list[int], np.ndarray]]:
    """{recurrent layer name: (bucket edges, per-bucket ||d l_T / d x_t||)} at the model's current weights.

    Nothing is accumulated into `.grad` (torch.autograd.grad); hooks are removed whatever happens.
    Packed sequences are not probed (their last step differs per sequence).
    """
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.RNNBase, nn.RNNCellBase))]
    if not layers:
        return {}
    taps: dict[str, dict[str, list]] = {n: {"x": [], "y": []} for n, _ in layers}
    handles = []

    def on_input(name: str, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or isinstance(x, PackedSequence) or not x.is_floating_point():
            return None
        x = _probe_leaf(x)
        taps[name]["x"].append((x, _time_dim(module, x)))
        return _replace_first(args, kwargs, x)

    def on_output(name: str, module: nn.Module, inputs: Any, output: Any) -> None:
        y = output[0] if isinstance(output, tuple) else output
        if isinstance(module, nn.LSTMCell):
            y = output[0]
        if isinstance(y, torch.Tensor) and y.requires_grad:
            taps[name]["y"].append((y, _time_dim(module, y)))

    try:
        for name, m in layers:
            handles.append(m.register_forward_pre_hook(functools.partial(on_input, name), with_kwargs=True))
            handles.append(m.register_forward_hook(functools.partial(on_output, name)))
        loss = loss_of(forward())
    finally:
        for h in handles:
            h.remove()
    out = {}
    cells = {n for n, m in layers if isinstance(m, nn.RNNCellBase)}
    for name, tap in taps.items():
        found = _probe_one(loss, tap, name in cells)
        if found is not None:
            out[name] = found
    return out


def _probe_one(loss: torch.Tensor, tap: dict, cell: bool) -> tuple[list[int], np.ndarray] | None:
    if not tap["x"] or not tap["y"]:
        return None
    if cell:  # call t is time step t: the last call's output is y_T; each call's input is x_t
        y = tap["y"][-1][0]
        xs = [x for x, _ in tap["x"]]
    else:     # the first call of the module (several calls: the first is probed)
        (y, tdim), xs = tap["y"][0], [tap["x"][0][0]]
    (g_y,) = torch.autograd.grad(loss, [y], retain_graph=True, allow_unused=True)
    if g_y is None:
        return None
    if not cell:  # dL/dy kept at the last time step only
        g_last = torch.zeros_like(g_y)
        g_last.select(tdim, -1).copy_(g_y.select(tdim, -1))
        g_y = g_last
    grads = torch.autograd.grad([y], xs, grad_outputs=[g_y], retain_graph=True, allow_unused=True)
    if cell:
        sq = torch.stack([g.detach().double().square().sum() if g is not None else torch.zeros((), dtype=torch.float64)
                          for g in grads])
    else:
        if grads[0] is None:
            return None
        sq = time_sumsq(grads[0].detach(), tap["x"][0][1])
    edges = bucket_edges(int(sq.numel()))
    return edges, bucket_norms(sq, edges).cpu().numpy()
