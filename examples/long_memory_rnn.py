"""Recurrent models on a task that needs long memory: recall, at the last of T steps, the first token.

    python examples/long_memory_rnn.py tokens.npz 30       # 4096 sequences of 30 integer tokens
    graddoctor compare examples/long_memory_rnn.py:rnn --data tokens.npz --remedies swap_cell,orthogonal_init,grad_clip \
        --steps 1200 --lr 3e-3
    graddoctor check examples/long_memory_rnn.py:rnn --input-shape 32,200 --vocab 4 --classes 4

Each sequence is T tokens drawn uniformly from VOCAB symbols; the label is its first token. Only
the gradient that flows back through all T steps can teach the model anything, so the task is at
chance (1/VOCAB) for a model whose gradient vanishes through time. `rnn` is a tanh nn.RNN with
PyTorch's default init (W_hh uniform in +-1/sqrt(H): spectral radius ~0.58): its gradient shrinks
by about that factor per step. `rnn_radius3` rescales W_hh to spectral radius 3. `lstm` is the
same model with an nn.LSTM.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

VOCAB, HIDDEN, LENGTH = 4, 64, 200


class Recall(nn.Module):
    """Embedding -> recurrent layer -> a classifier of the last step's output."""

    def __init__(self, cell: str = "rnn", vocab: int = VOCAB, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](16, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(self.emb(tokens))
        return self.head(y[:, -1])


def rnn(seed: int = 0) -> Recall:
    torch.manual_seed(seed)
    return Recall("rnn")


def lstm(seed: int = 0) -> Recall:
    torch.manual_seed(seed)
    return Recall("lstm")


def rnn_radius3(seed: int = 0) -> Recall:
    """The tanh RNN with W_hh rescaled to spectral radius 3."""
    model = rnn(seed)
    with torch.no_grad():
        w = model.rnn.weight_hh_l0
        w.mul_(3.0 / torch.linalg.eigvals(w).abs().max())
    return model


def recall_data(n: int = 512, length: int = LENGTH, vocab: int = VOCAB, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n, length] int64, labels [n] = first token)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, length), dtype=np.int64)
    return x, x[:, 0].copy()


if __name__ == "__main__":
    x, y = recall_data(4096, length=int(sys.argv[2]) if len(sys.argv) > 2 else LENGTH)
    np.savez(sys.argv[1] if len(sys.argv) > 1 else "tokens.npz", x=x, y=y)
