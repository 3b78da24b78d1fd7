"""The printed verdict table: every claim and verdict, long measurements wrapped under their own column."""

from __future__ import annotations

import pytest

from graddoctor.lab.verdicts import claim, render


def test_long_measurements_wrap_under_their_column_and_keep_mean_and_spread_together(monkeypatch):
    monkeypatch.setenv("COLUMNS", "70")
    long = "test accuracy " + ", ".join(f"depth {d} 0.{d:02d} ± 0.01" for d in range(3, 30))
    analysis = {"title": "t", "claims": [claim("C1", "x", "supported", "r", {}, long),
                                         claim("C10", "y", "refuted", "r", {}, "short")], "store": "/d/store.db"}
    lines = render(analysis).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("C1 "))
    end = next(i for i, line in enumerate(lines) if line.startswith("C10 ")) + 1
    body = lines[start:end]
    assert all(len(line) <= 69 for line in body)
    assert body[0].startswith("C1     supported  test accuracy")
    continued = [line for line in body[1:] if not line.startswith("C10")]
    assert continued and all(line.startswith(" " * 18) and line[18] != " " for line in continued)
    assert not any(line.rstrip().endswith("±") or line.lstrip().startswith("±") for line in body)
    assert any(line.startswith("C10    refuted    short") for line in body)
    assert "".join(line.strip() + " " for line in body if not line.startswith("C10")).count("± 0.01") == 27


def test_a_verdict_outside_the_three_is_refused():
    with pytest.raises(ValueError, match="supported"):
        claim("C1", "x", "maybe", "r", {})
