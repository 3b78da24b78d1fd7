"""Attention and output-logit statistics: pure tensor functions, no hooks, no host sync.

Attention logits are z = q·kᵀ·scale (+ a float mask), per head; a key position is *kept* when the
boolean mask allows it, the causal mask allows it and z is above `MASKED` (Hugging Face writes
finfo.min into float masks). Per query row over the kept keys, with p = softmax(z):
    max attention logit   max z
    attention entropy     H = logsumexp(z) - Σ p·z   (nats; 0 = one key takes all the weight)
Output logits z over the class dimension: log Z = logsumexp(z) per row, and max |z|.
Cost: the attention ones rebuild the logits, O(B·H·Tq·Tk·d) (docs/transformers.md, measured).
"""

from __future__ import annotations

import math

import torch

MASKED = -1e30  # float-mask values at or below this (finfo.min, -inf) mean "not attended"


def logit_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum over rows of log Z, number of rows, max |z|) of logits `z` with classes in the last dim."""
    z = z.detach()
    rows = z.numel() // max(z.shape[-1], 1) if z.ndim else 1
    zf = z.float()
    lse = torch.logsumexp(zf.reshape(rows, -1), dim=-1).sum(dtype=torch.float64)
    return lse, torch.tensor(float(rows), dtype=torch.float64, device=z.device), zf.abs().amax()


def attention_stats(z: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(max kept logit, per-head entropy sum over query rows [H], query rows with a kept key per head).

    `z`: [B, H, Tq, Tk] attention logits; `keep`: bool broadcastable to z, or None (all kept).
    """
    z = z.detach().float()
    keep = z > MASKED if keep is None else keep & (z > MASKED)
    masked = torch.where(keep, z, torch.full((), -math.inf, device=z.device))
    top = masked.amax()
    lse = torch.logsumexp(masked, dim=-1, keepdim=True)
    alive = torch.isfinite(lse)  # rows with at least one kept key
    p = torch.where(keep & alive, torch.exp(masked - lse), torch.zeros((), device=z.device))
    weighted = torch.where(keep, p * z, torch.zeros((), device=z.device)).sum(-1, keepdim=True)
    entropy = torch.where(alive, lse - weighted, torch.zeros((), device=z.device))[..., 0]  # [B, H, Tq]
    heads = entropy.shape[1]
    ent = entropy.transpose(0, 1).reshape(heads, -1).sum(-1, dtype=torch.float64)
    rows = alive[..., 0].transpose(0, 1).reshape(heads, -1).sum(-1, dtype=torch.float64)
    return top, ent, rows


def sdpa_logits(
    q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
    scale: float | None = None, enable_gqa: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The logits and kept mask `F.scaled_dot_product_attention(q, k, v, attn_mask, ...)` uses."""
    q, k = q.detach(), k.detach()
    if q.ndim == 3:  # [B*H?, T, d] or unbatched [H, T, d]: one "batch"
        q, k = q.unsqueeze(0), k.unsqueeze(0)
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    z = torch.matmul(q.float(), k.float().transpose(-2, -1)) * s
    keep = None
    if is_causal:
        tq, tk = z.shape[-2], z.shape[-1]
        keep = torch.ones(tq, tk, dtype=torch.bool, device=z.device).tril(diagonal=tk - tq)  # torch's convention
    if attn_mask is not None:
        mask = attn_mask.detach()
        if mask.dtype == torch.bool:
            keep = mask if keep is None else keep & mask
        else:
            z = z + mask.float()
    if keep is not None:
        keep = torch.broadcast_to(keep, z.shape)
    return z, keep


def mha_logits(
    m: torch.nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None, is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The logits and kept mask of `nn.MultiheadAttention` for these inputs, from its own weights.

    Masks follow nn.MultiheadAttention: True in a bool mask means *not* attended; float masks are added.
    """
    if m.batch_first and query.ndim == 3:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    if query.ndim == 2:
        query, key = query.unsqueeze(1), key.unsqueeze(1)
    e, h = m.embed_dim, m.num_heads
    with torch.no_grad():
        if m.in_proj_weight is not None:
            wq, wk = m.in_proj_weight[:e], m.in_proj_weight[e:2 * e]
        else:
            wq, wk = m.q_proj_weight, m.k_proj_weight
        bq = bk = None
        if m.in_proj_bias is not None:
            bq, bk = m.in_proj_bias[:e], m.in_proj_bias[e:2 * e]
        q = torch.nn.functional.linear(query.detach(), wq, bq)  # [Tq, B, E]
        k = torch.nn.functional.linear(key.detach(), wk, bk)
    tq, b = q.shape[0], q.shape[1]
    q = q.reshape(tq, b, h, e // h).permute(1, 2, 0, 3)
    k = k.reshape(k.shape[0], b, h, e // h).permute(1, 2, 0, 3)
    mask = None
    if attn_mask is not None:
        mask = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask
        if mask.ndim == 3:  # [B*H, Tq, Tk]
            mask = mask.reshape(b, h, tq, -1)
    if key_padding_mask is not None:
        pad = key_padding_mask[:, None, None, :]
        pad = ~pad if pad.dtype == torch.bool else pad
        if mask is None:
            mask = pad
        elif mask.dtype == torch.bool and pad.dtype == torch.bool:
            mask = mask & pad
        else:
            mask = (torch.where(mask, 0.0, -math.inf) if mask.dtype == torch.bool else mask) + (
                torch.where(pad, 0.0, -math.inf) if pad.dtype == torch.bool else pad)
    if is_causal and attn_mask is not None:
        is_causal = False  # nn.MultiheadAttention: is_causal is a hint that attn_mask is the causal mask
    return sdpa_logits(q, k, mask, is_causal=is_causal)
