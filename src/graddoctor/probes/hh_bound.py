"""The Pascanu, Mikolov & Bengio (2013) bound on gradient flow through time, from W_hh itself.

For h_t = phi(W_hh h_{t-1} + W_ih x_t + b) the Jacobian dh_t/dh_{t-1} = diag(phi'(.)) W_hh, so
||dh_t/dh_{t-k}|| <= (gamma * sigma_max(W_hh))^k, with gamma a bound on |phi'| (1 for tanh and
ReLU, 1/4 for the sigmoid). Vanishing is guaranteed while gamma * sigma_max < 1; exploding needs
sigma_max > 1/gamma (and, for long horizons, a spectral radius above 1/gamma). Gated cells are
listed per gate block of W_hh, each with its gate's gamma: evidence, not a bound on the cell.
Pure numpy: runs in the store writer's thread on the host copies of the weights.
"""

from __future__ import annotations

import json

import numpy as np


def radius_and_sigma(w: np.ndarray) -> tuple[float, float]:
    """(spectral radius, largest singular value) of a matrix; the radius is NaN when not square
    (an LSTM with proj_size)."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.size == 0:
        return float("nan"), float("nan")
    if not np.all(np.isfinite(w)):
        return float("nan"), float("nan")
    sigma = float(np.linalg.svd(w, compute_uv=False)[0])
    radius = float(np.abs(np.linalg.eigvals(w)).max()) if w.shape[0] == w.shape[1] else float("nan")
    return radius, sigma


def bound_rows(mats: list[tuple[str, float, np.ndarray]]) -> list[tuple[str, int, str, bytes]]:
    """Rows (stat, n, labels_json, float32 blob) of hh_radius, hh_sigma_max, hh_gamma for the blocks."""
    labels = [label for label, _, _ in mats]
    pairs = [radius_and_sigma(w) for _, _, w in mats]
    cols = {
        "hh_radius": [r for r, _ in pairs],
        "hh_sigma_max": [s for _, s in pairs],
        "hh_gamma": [g for _, g, _ in mats],
    }
    return [(stat, len(labels), json.dumps(labels), np.asarray(v, np.float32).tobytes()) for stat, v in cols.items()]
