"""Sequence tasks for the lab's recurrent and transformer studies, made here (nothing downloaded).

| name         | what                                                                          | split             |
|--------------|-------------------------------------------------------------------------------|-------------------|
| `recall-T`   | first-token recall: a key (1 of 4 symbols), then T - 1 distractors (uniform over 4 other symbols); the label is the key | 8,192 / 1,024     |
| `NAME-nN`    | the first N training sequences of NAME (and N // 8 test ones): for measurements at init, where evaluating a large split would cost more than the step | |
| `chars-T`    | character language model on Python's own stdlib sources: windows of T chars, targets the next char at every position | first 90 % / last 10 % of the text |

`recall-T` is the long-memory task of Hochreiter (1991), Bengio et al. (1994) and Hochreiter &
Schmidhuber (1997, Experiment 2: the symbol to remember and the distractors are different
symbols, so the input itself says what to store): only the gradient that flows back through all
T steps can teach the label (chance: 1/4). Ids 0-3 are the keys, 4-7 the distractors. `chars-T` reads
a fixed list of stdlib modules (always present where Python runs; their text differs a little
between Python versions), the first 150,000 characters, non-ASCII ones replaced by "?", keeps the
characters seen in the text (ids by sorted order) and cuts
non-overlapping windows of T + 1 characters. Token inputs are int64 and never standardised.
"""

from __future__ import annotations

import functools
import os
import re

import numpy as np
import torch

from ..data import Dataset
from ..errors import ConfigError

RECALL_KEYS, RECALL_TRAIN, RECALL_TEST = 4, 8192, 1024   # and as many distractor symbols
STDLIB_FILES = ("textwrap.py", "glob.py", "fnmatch.py", "shlex.py", "string.py", "heapq.py", "bisect.py",
                "argparse.py", "calendar.py", "difflib.py", "csv.py", "fractions.py", "statistics.py", "random.py")
CORPUS_CHARS = 150_000
_NAME = re.compile(r"^(recall|chars)-([1-9][0-9]*)(?:-n([1-9][0-9]*))?$")


def is_task(name: str) -> bool:
    """True for a name of this module's table (`recall-40`, `chars-64`, `chars-32-n256`)."""
    return bool(_NAME.match(name))


def load_task(name: str) -> Dataset:
    """The dataset `name` (`recall-T` or `chars-T`).

    Raises:
        ConfigError: a name that is not one of this module's.
    """
    match = _NAME.match(name)
    if match is None:
        raise ConfigError(f"unknown sequence task {name!r}; the tasks are 'recall-T' and 'chars-T' (T a length, e.g. "
                          "recall-40), optionally with '-nN' (the first N training sequences).")
    kind, length = match.group(1), int(match.group(2))
    data = recall(length) if kind == "recall" else chars(length)
    if match.group(3):  # "-nN": the first N training sequences (and N // 8 test ones), for measurements at init
        n = int(match.group(3))
        data = Dataset(name, data.x_train[:n], data.y_train[:n], data.x_test[: max(1, n // 8)], data.y_test[: max(1, n // 8)])
    return data


def recall(length: int, seed: int = 0) -> Dataset:
    """First-token recall over `length` steps: (tokens [n, T] int64, labels [n] = the first token, a key 0-3;
    the others are distractors 4-7)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, RECALL_KEYS, size=(RECALL_TRAIN + RECALL_TEST, length), dtype=np.int64)
    x[:, 1:] += RECALL_KEYS
    x = torch.as_tensor(x)
    y = x[:, 0].clone()
    return Dataset(f"recall-{length}", x[:RECALL_TRAIN], y[:RECALL_TRAIN], x[RECALL_TRAIN:], y[RECALL_TRAIN:])


@functools.lru_cache(maxsize=1)
def stdlib_text(max_chars: int = CORPUS_CHARS) -> str:
    """The text of STDLIB_FILES (those present), in that order, cut at `max_chars`; non-ASCII characters become "?"."""
    folder = os.path.dirname(os.__file__)
    parts = []
    for name in STDLIB_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                parts.append(f.read())
    text = "".join(c if c.isascii() else "?" for c in "".join(parts)[:max_chars])
    if len(text) < 10_000:
        raise ConfigError(f"found only {len(text)} characters of stdlib sources in {folder}; the chars-T task needs the "
                          "Python standard library's .py files.")
    return text


def chars(length: int) -> Dataset:
    """Next-character prediction on stdlib text: x [n, T] ids, y [n, T] = x shifted by one character."""
    text = stdlib_text()
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    seq = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    n = (len(seq) - 1) // (length + 1)
    windows = seq[: n * (length + 1)].reshape(n, length + 1)
    n_train = int(0.9 * n)
    x, y = windows[:, :-1], windows[:, 1:]
    return Dataset(f"chars-{length}", x[:n_train], y[:n_train], x[n_train:], y[n_train:])
