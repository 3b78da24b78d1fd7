"""Transformer surgery: QK-layernorm on nn.MultiheadAttention, pre-LN for torch's Transformer layers.

`qk_layernorm` wraps each nn.MultiheadAttention in a `QKNormAttention` that keeps the original
module (its parameters stay the same objects) and adds a LayerNorm over each head's dimension to the
queries and the keys before q·kᵀ (Dehghani et al. 2023). `pre_ln` sets `norm_first=True` on every
nn.TransformerEncoderLayer/DecoderLayer (Xiong et al. 2020). Both work on a copy unless `inplace`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._edits import Edit, RemedyError, Surgery, _set_child, _target


class QKNormAttention(nn.Module):
    """nn.MultiheadAttention with per-head LayerNorm on queries and keys; same call signature.

    Returns (output, None): the attention weights are not materialised (SDPA computes the output).
    """

    # The held nn.MultiheadAttention's own forward never runs: watch reads the logits here instead,
    # from the SDPA call (probes/libraries.py's is_attention_site).
    attention_site = True

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise RemedyError("qk_layernorm supports nn.MultiheadAttention with kdim = vdim = embed_dim, no bias_k/bias_v "
                              "and add_zero_attn=False; add the norms to q and k in your own attention module instead.")
        self.mha = mha
        head_dim = mha.embed_dim // mha.num_heads
        self.q_norm, self.k_norm = nn.LayerNorm(head_dim), nn.LayerNorm(head_dim)
        self.batch_first = mha.batch_first
        self._qkv_same_embed_dim = False  # keeps torch's fused fast paths (which would skip the norms) off

    # read by nn.TransformerEncoderLayer/TransformerEncoder while choosing their fast paths
    in_proj_weight = property(lambda self: self.mha.in_proj_weight)
    in_proj_bias = property(lambda self: self.mha.in_proj_bias)
    out_proj = property(lambda self: self.mha.out_proj)
    num_heads = property(lambda self: self.mha.num_heads)
    embed_dim = property(lambda self: self.mha.embed_dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_padding_mask: Any = None,
                need_weights: bool = True, attn_mask: Any = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, None]:
        m = self.mha
        if m.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        tq, b, e = query.shape
        h = m.num_heads
        w, bias = m.in_proj_weight, m.in_proj_bias
        q, k, v = (F.linear(x, w[j * e:(j + 1) * e], None if bias is None else bias[j * e:(j + 1) * e])
                   for j, x in enumerate((query, key, value)))
        q, k, v = (x.reshape(x.shape[0], b, h, e // h).permute(1, 2, 0, 3) for x in (q, k, v))
        q, k = self.q_norm(q), self.k_norm(k)
        mask = _combined_mask(attn_mask, key_padding_mask, b, h, tq, k.shape[2], q.dtype)
        causal = is_causal and mask is None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=m.dropout if self.training else 0.0,
                                           is_causal=causal)
        y = m.out_proj(y.permute(2, 0, 1, 3).reshape(tq, b, e))
        return (y.transpose(0, 1) if m.batch_first else y), None


def _combined_mask(attn_mask: Any, key_padding_mask: Any, b: int, h: int, tq: int, tk: int,
                   dtype: torch.dtype) -> torch.Tensor | None:
    """nn.MultiheadAttention's masks (True / -inf: not attended) as one additive float mask [B, H, Tq, Tk]."""
    out = None
    for mask in (attn_mask, key_padding_mask):
        if mask is None:
            continue
        add = torch.zeros(mask.shape, dtype=dtype).masked_fill(mask, -math.inf) if mask.dtype == torch.bool else mask.to(dtype)
        if mask is key_padding_mask:
            add = add[:, None, None, :]
        elif add.ndim == 3:
            add = add.reshape(b, h, tq, tk)
        out = add if out is None else out + add
    return out


def qk_layernorm(model: nn.Module, *, inplace: bool = False) -> Surgery:
    """Wrap every nn.MultiheadAttention of `model` (a copy unless `inplace`) in a `QKNormAttention`."""
    model = _target(model, inplace)
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    if not found:
        raise RemedyError("qk_layernorm found no nn.MultiheadAttention in the model: add a LayerNorm over the head "
                          "dimension to q and k inside your attention module (before q·kᵀ).")
    edits = []
    for name, mha in found:
        _set_child(model, name, QKNormAttention(mha))
        edits.append(Edit(name, "qk-layernorm", f"LayerNorm({mha.embed_dim // mha.num_heads}) on q and k per head"))
    return Surgery(model, tuple(edits))


def pre_ln(model: nn.Module, *, inplace: bool = False) -> Surgery:
    """Set norm_first=True on every post-LN nn.TransformerEncoderLayer/DecoderLayer of `model`."""
    model = _target(model, inplace)
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)) and not m.norm_first]
    if not layers:
        raise RemedyError("pre_ln found no post-LN nn.TransformerEncoderLayer/DecoderLayer: in your own blocks compute "
                          "x + f(LN(x)) instead of LN(x + f(x)), with a final LayerNorm after the last block.")
    for _, m in layers:
        m.norm_first = True
    return Surgery(model, tuple(Edit(n, "pre-LN", "norm_first=True") for n, _ in layers))
