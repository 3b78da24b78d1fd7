"""Recurrent models and sequence data for the through-time tests (made here; nothing downloaded)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import graddoctor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import long_memory_rnn as recall  # noqa: E402


def train_recall(model: nn.Module, steps: int = 15, length: int = 200, lr: float = 1e-3, seed: int = 0):
    """Adam on the first-token recall task; every step recorded; returns the run's view."""
    x, y = (torch.as_tensor(a) for a in recall.recall_data(256, length=length, seed=seed))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    with graddoctor.watch(model, opt) as run:
        for _ in range(steps):
            i = torch.randint(0, len(x), (32,), generator=gen)
            loss = F.cross_entropy(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
    return graddoctor.load(run)


def stdlib_corpus(max_chars: int = 60_000) -> str:
    """Text of a few Python stdlib sources (always present where Python runs)."""
    folder = os.path.dirname(os.__file__)
    text = ""
    for name in ("textwrap.py", "glob.py", "fnmatch.py", "shlex.py", "string.py", "heapq.py", "bisect.py"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            text += open(path, encoding="utf-8", errors="replace").read()
    return text[:max_chars]


class CharLM(nn.Module):
    def __init__(self, vocab: int, cell: str = "lstm", hidden: int = 128, layers: int = 1) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell](32, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(tokens))[0])


def train_char_lm(cell: str = "lstm", steps: int = 150, length: int = 20, hidden: int = 128, layers: int = 1,
                  lr: float = 3e-3, seed: int = 0):
    """A character LM on stdlib text (loss at every position); returns (view, first loss, last loss)."""
    text = stdlib_corpus()
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    torch.manual_seed(seed)
    model = CharLM(len(chars), cell, hidden, layers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    with graddoctor.watch(model, opt, every=5) as run:
        for _ in range(steps):
            start = torch.randint(0, len(ids) - length - 1, (32,), generator=gen)
            seq = torch.stack([ids[s:s + length + 1] for s in start.tolist()])
            logits = model(seq[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seq[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
            losses.append(loss.item())
    return graddoctor.load(run), float(np.mean(losses[:5])), float(np.mean(losses[-10:]))
