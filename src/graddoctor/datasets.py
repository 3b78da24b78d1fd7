"""Small real datasets for `compare`, split once: scikit-learn's digits, MNIST-1D, or an .npz file.

Nothing here downloads: digits ships with scikit-learn, MNIST-1D is generated locally by the
`mnist1d` package when it is installed, and an .npz is a file the user already has. scikit-learn
and mnist1d are imported inside the functions that need them, so `import graddoctor` stays light.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import torch

from .errors import ConfigError

DATASETS = ("digits", "mnist1d")


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
    """A named dataset: "digits" (scikit-learn, 1,797 8x8 images) or "mnist1d" (if installed).

    Raises:
        ConfigError: an unknown name, or the package that provides it is not installed.
    """
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ConfigError("--dataset digits needs scikit-learn: pip install scikit-learn.") from None
        data = load_digits()
        return dataclasses.replace(split("digits", data.data, data.target), image_shape=(1, 8, 8))
    if name == "mnist1d":
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
    raise ConfigError(f"unknown dataset {name!r}; the datasets are {', '.join(DATASETS)} (or give --data file.npz).")


def load_npz(path: str) -> Dataset:
    """An .npz file with arrays `x` and `y` (integer y: classification), split 75/25 (seeded)."""
    from .modelspec import load_data

    x, y = load_data(path, None)
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
        "data must be a dataset name ('digits', 'mnist1d'), an .npz path, (x, y), (x_train, y_train, x_test, y_test) "
        f"or a graddoctor.datasets.Dataset; got {type(data).__name__}."
    )
