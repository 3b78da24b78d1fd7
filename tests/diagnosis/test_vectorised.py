"""The rules' numpy forms give exactly what the plain loops they replaced gave (bit for bit)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graddoctor.diagnosis.profile import finite_median, running_medians, total_grad_norm


@pytest.mark.parametrize("seed", range(2))
def test_running_medians_are_the_medians_of_each_window(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n, history, start = int(rng.integers(0, 60)), int(rng.integers(1, 12)), int(rng.integers(1, 6))
        x = np.exp(rng.normal(0, 2, n))
        if seed % 2:
            x = np.round(x, 1)  # ties
        want = [float(np.median(x[max(0, k - history):k])) for k in range(start, n)]
        assert running_medians(x, history, start).tolist() == want


@pytest.mark.parametrize("seed", range(2))
def test_finite_median_is_the_median_of_each_columns_finite_values(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        m = rng.normal(0, 1, (int(rng.integers(1, 30)), int(rng.integers(0, 40)))) ** 3
        if seed % 2:
            m = np.round(m, 1)
        m[rng.random(m.shape) < 0.2] = np.nan
        m[rng.random(m.shape) < 0.05] = np.inf
        m[rng.random(m.shape) < 0.05] = -np.inf
        want = [float(np.median(c[np.isfinite(c)])) if np.isfinite(c).any() else math.nan for c in m.T]
        np.testing.assert_array_equal(finite_median(m), want)


class _View:
    """The two calls total_grad_norm makes of a RunView."""

    def __init__(self, g: np.ndarray, rec: np.ndarray) -> None:
        self.g, self.rec, self.stats, self.steps = g, rec, ["grad_norm"], np.arange(g.shape[1])

    def stat_matrix(self, stat, copy=True):
        return self.g

    def recorded(self, stat, copy=True):
        return self.rec


@pytest.mark.parametrize("seed", range(2))
def test_total_grad_norm_is_the_loop_over_steps(seed):
    rng = np.random.default_rng(seed)
    for trial in range(20):
        layers, steps = int(rng.integers(1, 300)), int(rng.integers(0, 60))
        g = np.exp(rng.normal(0, 3, (layers, steps)))
        rec = rng.random((layers, steps)) < 0.7 if trial % 2 else np.repeat(np.arange(layers)[:, None] % 2 == 0, steps, 1)
        g[rng.random(g.shape) < 0.01] = np.inf
        g[~rec] = np.nan
        want = np.full(steps, np.nan)
        for j in range(steps):
            col = g[rec[:, j], j]
            if col.size:
                want[j] = math.sqrt(float(np.sum(col ** 2))) if np.all(np.isfinite(col)) else math.inf
        np.testing.assert_array_equal(total_grad_norm(_View(g, rec)), want)
