"""Reading attention logits where they are formed, on attention steps only.

Inside an attention site's forward (probes.libraries.is_attention_site) a `TorchFunctionMode` is
pushed by the site's forward pre-hook and popped by its forward hook (`always_call=True`: popped
even when the forward raises), so nothing outside that forward is ever intercepted and nothing is
left behind after `watch`. It sees `F.scaled_dot_product_attention` (what Hugging Face models call
by default) and a softmax over the last dim of a 4-d tensor (eager softmax(QKᵀ/√d)), computes the
statistics of probes.attention from their arguments and calls the function unchanged.
`nn.MultiheadAttention` is read from its own inputs and weights in its pre-hook instead (its inner
calls run inside torch's dispatch of `F.multi_head_attention_forward`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .attention import attention_stats, mha_logits, sdpa_logits

Sink = Callable[[torch.Tensor, torch.Tensor | None], None]  # (logits [B,H,Tq,Tk], kept mask)

_SOFTMAX = (F.softmax, torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax)
_SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


class AttentionMode(TorchFunctionMode):
    """Hands the attention logits of every SDPA / last-dim softmax call to `sink`."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self.sink = sink

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            bound = dict(zip(_SDPA_ARGS, args), **kwargs)
            self.sink(*sdpa_logits(bound["query"], bound["key"], bound.get("attn_mask"), bool(bound.get("is_causal")),
                                   bound.get("scale"), bool(bound.get("enable_gqa"))))
        elif func in _SOFTMAX and args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if dim in (-1, 3):
                self.sink(args[0], None)
        return func(*args, **kwargs)


def read_mha(module: torch.nn.MultiheadAttention, args: tuple, kwargs: dict, sink: Sink) -> None:
    """Hand `nn.MultiheadAttention`'s logits for this call (args, kwargs of its forward) to `sink`."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs).arguments
    sink(*mha_logits(module, bound["query"], bound["key"], bound.get("key_padding_mask"), bound.get("attn_mask"),
                     bool(bound.get("is_causal", False))))


def stats_sink(add: Callable[[str, torch.Tensor], None]) -> Sink:
    """A sink that turns logits into the (AMAX, AENT, AROWS) partials and hands them to `add`."""
    from .record import AENT, AMAX, AROWS

    def sink(z: torch.Tensor, keep: torch.Tensor | None) -> None:
        top, ent, rows = attention_stats(z, keep)
        add(AMAX, top)
        add(AENT, ent)
        add(AROWS, rows)

    return sink
