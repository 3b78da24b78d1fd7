"""From a closed step's host values to store rows: aggregation, derivation, layer positions.

Runs in the store writer's thread, off the training step's critical path. The training thread
only hands over a `StepPayload` (host numbers, no tensors).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable

import numpy as np

from ..config import Stat
from .derive import derive, histograms
from .origin import origin
from .record import WN, WSQ, Key, aggregate
from .select import LayerPlan


@dataclasses.dataclass
class StepPayload:
    """Everything one recorded step measured, on the host."""

    step: int
    wall_time: float
    keys: list[Key]
    values: list[np.ndarray]
    numel: dict[int, list[int]]         # output elements per call, per layer
    fired: list[int]                      # layer indices in the order their forward ran
    scalars: list[tuple[int, str, float]]
    nonfinite: dict[int, float]           # exact NaN/Inf gradient counts, for layers that have any
    # Under torch.distributed (rank 0): fills keys, values, numel, fired and nonfinite from every
    # rank's partials, here in the writer's thread rather than in the training step.
    combine: Callable[["StepPayload"], None] | None = None
    calls: list[int] = dataclasses.field(default_factory=list)  # layer of every forward call, in order
    exact_grad_sq: dict[int, float] = dataclasses.field(default_factory=dict)  # float64, layers with a non-finite float32 norm
    exact_weight_sq: dict[int, float] = dataclasses.field(default_factory=dict)


class RowBuilder:
    """Turns payloads into rows; owns the layer positions and the first non-finite value."""

    def __init__(self, plan: list[LayerPlan], positions: dict[str, int]) -> None:
        self.plan = plan
        self.position = {i: positions[layer.name] for i, layer in enumerate(plan) if layer.name in positions}
        self.name_at = {p: name for name, p in positions.items()}
        self.next_position = max(positions.values(), default=-1) + 1  # after every stored layer (resume)
        self.first_nonfinite: dict[str, Any] | None = None

    def build(self, p: StepPayload) -> dict[str, Any]:
        if p.combine is not None:
            p.combine(p)
        values = aggregate(p.keys, p.values)
        amp_scale = next((v for s, k, v in p.scalars if k == "amp_scale" and s == p.step), None)
        derived = derive(self.plan, values, p.numel, p.nonfinite, amp_scale, p.exact_grad_sq, p.exact_weight_sq)
        layers = self._assign_positions(p)
        pos = self.position
        stat_rows = [(p.step, pos[i], stat.value, v) for (i, stat), v in derived.items() if i in pos]
        rows: dict[str, Any] = {
            "layers": layers,
            "steps": [(p.step, p.wall_time)],
            "stats": stat_rows,
            "scalars": p.scalars + _clip_factor(p.step, derived),
            "hists": [
                (p.step, pos[i], kind, lo, hi, nf, json.dumps(c)) for i, kind, lo, hi, nf, c in histograms(values) if i in pos
            ],
        }
        if self.first_nonfinite is None:
            bad = [r for r in stat_rows if not math.isfinite(r[3])]
            if bad:
                by_pos = {v: k for k, v in pos.items()}
                derived_bad = [(by_pos[r[1]], r[2]) for r in sorted(bad, key=lambda r: (r[1], r[2]))]
                found = origin(p.keys, values, p.calls, p.fired, p.nonfinite, derived_bad)
                i, stat, where = found if found is not None else (derived_bad[0][0], derived_bad[0][1], "statistic")
                self.first_nonfinite = {"step": p.step, "layer": self.plan[i].name, "stat": stat, "pass": where}
                rows["first_nonfinite"] = self.first_nonfinite
        return rows

    def _assign_positions(self, p: StepPayload) -> list[tuple[int, str, str, str, int]]:
        """Positions in forward order: layers as they first fired, then param layers that never did."""
        new = [i for i in p.fired if i not in self.position]
        param_layers = {i for (i, code) in p.keys if code in (WN, WSQ)}
        new += sorted(i for i in param_layers if i not in self.position and i not in new)
        rows = []
        for i in new:
            pos = self.next_position
            self.next_position += 1
            self.position[i] = pos
            layer = self.plan[i]
            self.name_at[pos] = layer.name
            shapes = json.dumps(layer.param_shapes)
            rows.append((pos, layer.name, layer.type_name, layer.kind, layer.n_params, shapes))
        return rows


def _clip_factor(step: int, derived: dict) -> list[tuple[int, str, float]]:
    """Per step: total gradient norm at the optimizer step over the total when the gradients were
    complete (1: nothing clipped them; < 1: clipping scaled them by this factor)."""
    post = [v for (_, stat), v in derived.items() if stat == Stat.GRAD_NORM]
    pre = [v for (_, stat), v in derived.items() if stat == Stat.GRAD_NORM_PRE_CLIP]
    if not pre or len(pre) != len(post):
        return []
    total_pre = math.sqrt(sum(v * v for v in pre))
    total_post = math.sqrt(sum(v * v for v in post))
    if not (math.isfinite(total_pre) and math.isfinite(total_post)) or total_pre == 0:
        return []
    return [(step, "clip_factor", total_post / total_pre)]
