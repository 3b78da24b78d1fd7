"""benchmarks/theory_vs_measured.py runs and prints its tables (its numbers are read by people,
and in docs/theory.md; the --quick smoke run only checks the plumbing and that theory and measurement
are not wildly apart)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))


def test_theory_benchmark_quick_run_prints_the_tables(capsys):
    import theory_vs_measured

    assert theory_vs_measured.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(("relu ", "tanh "))]
    assert len(rows) == 7  # 2 activations x 3 inits, and the BatchNorm row
    errors = [float(row[6].rstrip("%")) for row in rows]
    assert all(abs(e) < 10 for e in errors), out
    assert "grad_norm^2" in out
