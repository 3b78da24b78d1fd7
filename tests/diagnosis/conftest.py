"""Fixtures of the diagnosis tests: cached scenario runs (tests/conftest.py sets one torch thread)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def scenario_runs():
    """Scenario id -> recorded RunView, trained once per session and shared by the tests that read it."""
    from scenarios import SCENARIOS, train  # tests/diagnosis is on sys.path (rootdir-relative imports)

    cache: dict = {}

    def get(case_id: str):
        if case_id not in cache:
            case = next(c for c in SCENARIOS if c["id"] == case_id)
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    cache[case_id] = train(case["build"](), **case["train"])
            finally:
                torch.set_num_threads(before)
        return cache[case_id]

    return get
