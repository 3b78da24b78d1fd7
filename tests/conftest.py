"""Shared fixtures. Tests make their own small data; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # Test tensors are small: two OpenMP threads on a shared 2-core machine mostly wait on each
    # other (a 16x384 BatchNorm step measured 50x slower), so every test runs torch on one thread.
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "runs.db"
