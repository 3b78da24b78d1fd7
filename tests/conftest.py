"""Shared fixtures. Tests make their own small data; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "runs.db"
