"""The lab's datasets: offline, fixed split, standardised; bad files say what shape was expected."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from graddoctor.errors import ConfigError
from graddoctor.data import load_dataset as load, load_idx, read_idx


def _write_idx(path, array: np.ndarray) -> str:
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())
    return str(path)


def test_digits_is_split_standardised_and_image_shaped():
    d = load("digits")
    assert (len(d.x_train), len(d.x_test)) == (1348, 449) and d.image_shape == (1, 8, 8)
    assert d.x_train.mean().abs() < 1e-5 and d.n_classes == 10


@pytest.mark.parametrize("name", ["teacher", "gaussian"])
def test_synthetic_tasks_are_the_same_every_time(name):
    a, b = load(name), load(name)
    assert a.x_train.shape == (1500, 32) and (a.x_train == b.x_train).all() and (a.y_test == b.y_test).all()
    assert len(a.y_train.unique()) >= 5


def test_mnist1d_gives_numpy_and_python_their_global_seeds_back():
    pytest.importorskip("mnist1d")
    np.random.seed(5)
    random.seed(5)
    expected = np.random.rand(), random.random()
    np.random.seed(5)
    random.seed(5)
    d = load("mnist1d")
    assert (np.random.rand(), random.random()) == expected
    assert d.x_train.shape == (4000, 40) and d.image_shape == (1, 40)


def test_idx_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = _write_idx(tmp_path / "img.idx", rng.integers(0, 255, (40, 6, 5)))
    labels = _write_idx(tmp_path / "lbl.idx", np.arange(40) % 3)
    d = load(f"idx:{images}:{labels}")
    assert d.x_train.shape == (30, 30) and d.image_shape == (1, 6, 5) and d.n_classes == 3
    assert read_idx(labels).shape == (40,)


def test_idx_images_of_the_wrong_shape_say_what_was_expected(tmp_path):
    flat = _write_idx(tmp_path / "flat.idx", np.zeros((40, 30)))
    labels = _write_idx(tmp_path / "lbl.idx", np.zeros(40))
    with pytest.raises(ConfigError, match=r"expected IDX images of shape \(n, height, width\), got shape \(40, 30\)"):
        load_idx(flat, labels)
    short = _write_idx(tmp_path / "short.idx", np.zeros(7))
    with pytest.raises(ConfigError, match=r"labels of shape \(40,\)"):
        load_idx(_write_idx(tmp_path / "img.idx", np.zeros((40, 2, 2))), short)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"hello world")
    with pytest.raises(ConfigError, match="not an IDX file"):
        read_idx(str(path))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="digits, mnist1d, mnist, teacher, gaussian"):
        load("cifar")


@pytest.mark.parametrize("x_shape, y_shape, message", [((20,), (20,), r"x of shape \(n, features...\).*got shape \(20,\)"),
                                                      ((20, 3), (20, 2), r"y of shape \(n,\) holding class indices, got shape \(20, 2\)")],
                         ids=["flat-x", "2d-integer-y"])
def test_an_npz_of_the_wrong_shape_says_what_was_expected(tmp_path, x_shape, y_shape, message):
    np.savez(tmp_path / "d.npz", x=np.zeros(x_shape, dtype=np.float32), y=np.zeros(y_shape, dtype=np.int64))
    with pytest.raises(ConfigError, match=message):
        load(str(tmp_path / "d.npz"))
