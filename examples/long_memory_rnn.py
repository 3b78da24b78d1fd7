"""Recurrent models on a task that needs long memory: recall, at the last of T steps, the key given at the first.

    python examples/long_memory_rnn.py tokens.npz 80       # 8192 sequences of 80 integer tokens
    graddoctor compare examples/long_memory_rnn.py:rnn --data tokens.npz --remedies swap_cell,orthogonal_init,grad_clip \
        --steps 400 --lr 3e-3
    graddoctor check examples/long_memory_rnn.py:rnn --input-shape 32,200 --vocab 8 --classes 4

Each sequence starts with a key, one of KEYS symbols (ids 0..KEYS-1), followed by T - 1 distractors
drawn uniformly from NOISE other symbols (ids KEYS..KEYS+NOISE-1); the label is the key. The
distractors say nothing about the label, so only the gradient that flows back through all T steps
can teach the model anything: the task stays at chance (1/KEYS) for a model whose gradient
vanishes through time. `rnn` is a tanh nn.RNN with PyTorch's default init (W_hh uniform in
+-1/sqrt(H): spectral radius ~0.58): its gradient shrinks by about that factor per step.
`rnn_radius3` rescales W_hh to spectral radius 3. `lstm` is the same model with an nn.LSTM
(PyTorch's default init).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn

KEYS, NOISE, HIDDEN, LENGTH = 4, 4, 64, 200
VOCAB = KEYS + NOISE


class Recall(nn.Module):
    """Embedding -> recurrent layer -> a classifier of the last step's output (one class per key)."""

    def __init__(self, cell: str = "rnn", vocab: int = VOCAB, hidden: int = HIDDEN, keys: int = KEYS) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](16, hidden, batch_first=True)
        self.head = nn.Linear(hidden, keys)

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


def recall_data(n: int = 512, length: int = LENGTH, keys: int = KEYS, noise: int = NOISE,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n, length] int64: a key in [0, keys) then distractors in [keys, keys + noise); labels [n] = the key)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(keys, keys + noise, size=(n, length), dtype=np.int64)
    x[:, 0] = rng.integers(0, keys, size=n)
    return x, x[:, 0].copy()


if __name__ == "__main__":
    x, y = recall_data(8192, length=int(sys.argv[2]) if len(sys.argv) > 2 else LENGTH)
    np.savez(sys.argv[1] if len(sys.argv) > 1 else "tokens.npz", x=x, y=y)
