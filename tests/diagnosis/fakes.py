"""Hand-made RunViews: exact statistics for unit tests of the rules, no model and no training."""

from __future__ import annotations

from typing import Any

import numpy as np

from graddoctor.store.view import LayerInfo, RunView


def fake_run(
    layers: list[tuple[str, str, str]],
    stats: dict[str, Any],
    *,
    steps: int,
    scalars: dict[str, Any] | None = None,
    optimizer: str | None = "SGD",
    first_nonfinite: dict[str, Any] | None = None,
) -> RunView:
    """A RunView over `steps` recorded steps.

    Args:
        layers: (name, type, kind) per layer, input side first.
        stats: stat -> {layer name: value or per-step sequence}; layers left out have no record.
        scalars: key -> per-step sequence.
    """
    names = [name for name, _, _ in layers]
    matrices, recorded = {}, {}
    for stat, per_layer in stats.items():
        m = np.full((len(layers), steps), np.nan)
        r = np.zeros((len(layers), steps), dtype=bool)
        for name, value in per_layer.items():
            i = names.index(name)
            m[i] = np.broadcast_to(np.asarray(value, dtype=float), (steps,))
            r[i] = True
        matrices[stat], recorded[stat] = m, r
    return RunView(
        path=":memory:", run_id=1, name="fake", status="finished",
        config={"optimizer": {"type": optimizer}} if optimizer else {}, env={}, error=None,
        first_nonfinite=first_nonfinite,
        layer_info=tuple(LayerInfo(n, t, k, 100 if k == "param" else 0) for n, t, k in layers),
        steps=np.arange(steps), wall_time=np.arange(steps, dtype=float),
        _stats=matrices, _recorded=recorded,
        _scalars={k: np.asarray(v, dtype=float) for k, v in (scalars or {}).items()}, _hists={},
    )


def mlp_layers(depth: int, act: str = "ReLU") -> list[tuple[str, str, str]]:
    """Linear/act/.../Linear layer infos named like an nn.Sequential: '0', '1', ..."""
    out = []
    for k in range(depth):
        out.append((str(len(out)), "Linear", "param"))
        if k < depth - 1:
            out.append((str(len(out)), act, "activation"))
    return out


def profile_stats(depth: int, factor: float, *, steps: int = 10, last: float = 0.1, update: float = 1e-3,
                  act: str = "ReLU") -> dict[str, dict[str, Any]]:
    """Statistics of an MLP whose pre-activation gradient is multiplied by `factor` per layer toward the input."""
    layers = mlp_layers(depth, act)
    linears = [n for n, t, _ in layers if t == "Linear"]
    acts = [n for n, t, _ in layers if t != "Linear"]
    out_grad = {n: last * factor ** (depth - 1 - k) for k, n in enumerate(linears)}
    return {
        "out_grad_norm": out_grad,
        "grad_norm": {n: 5 * g for n, g in out_grad.items()},
        "weight_norm": {n: 5.0 for n in linears},
        "update_ratio": {n: update for n in linears},
        "act_std": {n: 1.0 for n in linears + acts},
        "act_mean": {n: 0.0 for n in linears + acts},
        "dead_frac": {n: 0.0 for n in acts},
    }
