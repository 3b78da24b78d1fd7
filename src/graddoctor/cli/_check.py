"""`graddoctor check` and `graddoctor predict --model`: the model from a MODEL spec, a batch from
`--input-shape` or `--data`, then the library's `check`."""

from __future__ import annotations

import dataclasses

import torch

from ..data import load_arrays
from ..diagnosis import Diagnosis
from ..diagnosis._check import check
from ..diagnosis._inputs import sequence_inputs
from ..errors import ConfigError
from .._validate import MAX_BATCH, check_int, check_size
from ..train.factory import load_model


def parse_shape(text: str) -> tuple[int, ...]:
    """'64,784' -> (64, 784): batch size first, then one sample's shape."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(n < 1 for n in shape):
        raise ConfigError(
            f"--input-shape takes the batch size then a sample's shape, as positive integers: 64,784 or 32,3,32,32; "
            f"got {text[:60]!r}."
        )
    check_int("--input-shape batch size", shape[0], minimum=1, maximum=MAX_BATCH)
    check_size("--input-shape", shape)  # before anything is allocated
    return shape


def check_spec(
    spec: str, *, input_shape: str | None = None, classes: int | None = None, data: str | None = None, steps: int = 20,
    vocab: int | None = None,
) -> Diagnosis:
    """`graddoctor check`: build the model from `spec` (runs the user's code), make a batch, check it.

    Without `data`, inputs are N(0, 1) of `input_shape` (token ids for an Embedding-first model) and
    targets are random class labels in [0, classes), or N(0, 1) regression targets without `classes`.
    `vocab`: integer token ids in [0, vocab) of `input_shape` (batch, sequence length), for any model
    that takes token ids (an RNN, a transformer). A model whose first layer is an nn.RNN/LSTM/GRU and
    an `input_shape` of (batch, length) gets float features of its input_size appended.
    """
    model = load_model(spec)
    shape = parse_shape(input_shape) if input_shape else None
    gen = torch.Generator().manual_seed(0)
    notes = [f"model from {spec} (this ran its code)."]
    if data is not None:
        x, y = load_arrays(data, shape[0] if shape else 256)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        x, y = x.to(device), (y.to(device) if y is not None else None)
        notes.append(f"data: the first {len(x)} samples of {data}" + ("" if y is not None else ", random targets") + ".")
    elif shape is None:
        raise ConfigError("graddoctor check needs --input-shape (e.g. 64,784) or --data file.npz.")
    else:
        x, y = sequence_inputs(model, shape, vocab, gen), None
        kind = f"integer token ids in [0, {int(x.max()) + 1 if vocab is None else vocab})" if not x.is_floating_point() \
            else "N(0, 1) inputs"
        notes.append(f"random {kind} of shape {tuple(x.shape)}; a reading of the architecture and init, not of your data.")
    if y is None and classes is not None:
        if classes < 2:
            raise ConfigError(f"--classes must be at least 2, got {classes}.")
        y = torch.randint(0, classes, (len(x),), generator=gen).to(x.device)
        notes.append(f"random class labels in [0, {classes}) and cross-entropy.")
    d = check(model, (x, y) if y is not None else x, steps=steps)
    return dataclasses.replace(d, notes=tuple(notes) + d.notes)
