"""Theory tests run torch on one thread: their tensors are small, and on a shared 2-core machine
two OpenMP threads wait on each other (a 16x384 BatchNorm step measured 50x slower)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
