"""The benchmark scripts run (their numbers are measured by hand, never asserted in tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))


@pytest.mark.slow
def test_overhead_benchmark_runs_and_prints_every_mode(capsys):
    import overhead

    assert overhead.main(["--rounds", "1", "--steps", "1", "--models", "cnn"]) == 0  # all four default modes
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[2:]] == ["floor", "default", "full", "full/10"]
    assert all(float(line.split()[2]) > 0 for line in lines[2:])


def test_param_floor_benchmark_runs_and_prints_each_reduction(capsys):
    import param_floor

    assert param_floor.main(["--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and all(float(line.split()[-2]) > 0 for line in lines[1:])  # 4 reductions, 2 for the sample


@pytest.mark.slow
def test_store_scale_benchmark_runs_at_a_tiny_size(capsys):
    import store_scale

    assert store_scale.main(["--steps", "20", "--old-steps", "5", "--verbs", "show,series"]) == 0
    out = capsys.readouterr().out
    assert "bytes/value" in out and "FAILED" not in out
    assert "show" in out and "series" in out


def test_fault_buffer_benchmark_runs_at_a_tiny_size(capsys):
    import fault_buffer

    assert fault_buffer.main(["--layers", "4", "--steps", "3", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "KiB held per recorded step" in out and "step locked" in out
