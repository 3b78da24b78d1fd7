"""A small GPT-style model built in the tests (nanoGPT's shape): tied embeddings, pre-LN or post-LN
blocks, attention through F.scaled_dot_product_attention or an eager softmax(QKᵀ/√d)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, eager: bool = False) -> None:
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.heads, self.eager = heads, eager

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        if self.eager:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
            att = att.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc, self.act, self.out = nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.fc(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, post_ln: bool, eager: bool) -> None:
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), CausalSelfAttention(width, heads, eager)
        self.ln2, self.mlp = nn.LayerNorm(width), MLP(width)
        self.post_ln = post_ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_ln:
            x = self.ln1(x + self.attn(x))
            return self.ln2(x + self.mlp(x))
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int = 32, width: int = 32, depth: int = 2, heads: int = 4, context: int = 16,
                 post_ln: bool = False, eager: bool = False, init_std: float | None = 0.02) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, post_ln, eager) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2
        for name, p in self.named_parameters():  # GPT-2's init; None keeps PyTorch's defaults
            if p.dim() == 2 and init_std is not None:
                nn.init.normal_(p, std=init_std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def char_batches(vocab: int = 32, context: int = 16, batch: int = 8, seed: int = 0):
    """An endless stream of (x, y) token batches from a fixed random 'language' (a Markov chain)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.softmax(torch.randn(vocab, vocab, generator=g) * 3, dim=-1)
    while True:
        x = torch.empty(batch, context + 1, dtype=torch.long)
        x[:, 0] = torch.randint(vocab, (batch,), generator=g)
        for t in range(context):
            x[:, t + 1] = torch.multinomial(table[x[:, t]], 1, generator=g)[:, 0]
        yield x[:, :-1], x[:, 1:]


def train(model: nn.Module, run=None, *, steps: int, lr: float, warmup: int = 0, clip: float | None = None,
          seed: int = 0, hooks=None, vocab: int = 32) -> list[float]:
    """AdamW on char_batches; returns the losses. `hooks(step)` runs before each step's forward."""
    torch.manual_seed(seed)
    opt = run.optimizer if run is not None and run.optimizer is not None else None
    assert opt is not None
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    data = char_batches(vocab=vocab, seed=seed)
    losses = []
    for step in range(steps):
        if hooks is not None:
            hooks(step)
        x, y = next(data)
        logits = model(x)
        logits = getattr(logits, "logits", logits)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
        run.log(loss=loss)
        losses.append(float(loss.detach()))
    return losses
