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
from ..store.segments import StepStats
from .derive import derive, histograms
from .fastrows import KNOWN_CODES, Layers, Layout, group, step_block
from .origin import origin
from .record import GN, HIST_ACT, HIST_GRAD, WN, WSQ, Key, aggregate
from .select import LayerPlan
from .through_time import time_rows


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
    time: tuple[list, list] = ((), ())   # recurrent layers' per-time-step keys and host values (through_time)
    calls: list[int] = dataclasses.field(default_factory=list)  # layer of every forward call, in order
    exact_grad_sq: dict[int, float] = dataclasses.field(default_factory=dict)  # float64, layers with a non-finite float32 norm
    exact_weight_sq: dict[int, float] = dataclasses.field(default_factory=dict)


_KEPT_LAYOUTS = 4  # distinct key sets kept (the tiers: cheap steps, full steps, histogram steps)


class RowBuilder:
    """Turns payloads into rows; owns the layer positions and the first non-finite value."""

    def __init__(self, plan: list[LayerPlan], positions: dict[str, int]) -> None:
        self.plan = plan
        self.position = {i: positions[layer.name] for i, layer in enumerate(plan) if layer.name in positions}
        self.name_at = {p: name for name, p in positions.items()}
        self.next_position = max(positions.values(), default=-1) + 1  # after every stored layer (resume)
        self.first_nonfinite: dict[str, Any] | None = None
        self.layers = Layers(plan)
        self._position_array: np.ndarray | None = None
        self._layouts: list[Layout] = []  # the last few steps' layouts, newest first (one per tier, say)

    def _layout(self, keys: list[Key]) -> Layout:
        """The Layout of these keys: a kept one where a recent step brought the same keys (steps of one
        model and tier do: comparing keys is much cheaper than working them out), else a new one."""
        for k, layout in enumerate(self._layouts):
            if len(layout.keys) == len(keys) and layout.keys == keys:
                if k:
                    self._layouts.insert(0, self._layouts.pop(k))
                return layout
        layout = Layout(keys)
        self._layouts = [layout, *self._layouts[:_KEPT_LAYOUTS - 1]]
        return layout

    def build(self, p: StepPayload) -> dict[str, Any]:
        if p.combine is not None:
            p.combine(p)
        amp_scale = next((v for s, k, v in p.scalars if k == "amp_scale" and s == p.step), None)
        layout = self._layout(p.keys)
        layers = self._assign_positions(p, layout)
        block = None
        # the numpy block computes exactly what derive() would for the codes it knows and finite partials
        # (a non-finite one needs derive's overflow and origin logic)
        if not (p.exact_grad_sq or p.exact_weight_sq) and set(layout.by_code) <= KNOWN_CODES:
            block = step_block(self.layers, layout, p.values, p.numel, p.nonfinite, amp_scale, p.step,
                               self._positions(), self.next_position, finite_only=True)
        values = None
        if block is None:  # statistics the numpy block does not compute, or partials that do not line up
            values = aggregate(p.keys, p.values)
            derived = derive(self.plan, values, p.numel, p.nonfinite, amp_scale, p.exact_grad_sq, p.exact_weight_sq)
            block = step_stats(p.step, derived, self.position, self.next_position)
        pos = self.position
        first = {}
        for code in (HIST_ACT, HIST_GRAD):  # histograms: the first call of the step only
            for j in layout.by_code.get(code, ()):
                first.setdefault(p.keys[j], p.values[j])
        rows: dict[str, Any] = {
            "layers": layers,
            "steps": [(p.step, p.wall_time)],
            "stats": [block],
            "scalars": p.scalars + _clip_factor(p.step, block),
            "hists": [
                (p.step, pos[i], kind, lo, hi, nf, json.dumps(c)) for i, kind, lo, hi, nf, c in histograms(first) if i in pos
            ],
        }
        if p.time[0]:
            rows["time_stats"] = [(r[0], pos[r[1]], *r[2:]) for r in time_rows(p.step, *p.time) if r[1] in pos]
        if self.first_nonfinite is None:
            bad = block.recorded & ~np.isfinite(block.values)  # [stat, position]
            if bad.any():
                by_pos = {v: k for k, v in self.position.items()}
                derived_bad = [(by_pos[int(q)], block.names[int(k)]) for q, k in sorted(zip(*np.nonzero(bad.T)))]
                values = values if values is not None else aggregate(p.keys, p.values)
                found = origin(p.keys, values, p.calls, p.fired, p.nonfinite, derived_bad)
                i, stat, where = found if found is not None else (derived_bad[0][0], derived_bad[0][1], "statistic")
                self.first_nonfinite = {"step": p.step, "layer": self.plan[i].name, "stat": stat, "pass": where}
                rows["first_nonfinite"] = self.first_nonfinite
        return rows

    def _positions(self) -> np.ndarray:
        """position[layer index] (-1: no position yet), rebuilt when a layer gets one."""
        if self._position_array is None or (self._position_array >= 0).sum() != len(self.position):
            self._position_array = np.full(len(self.plan), -1, dtype=np.int64)
            for i, pos in self.position.items():
                self._position_array[i] = pos
        return self._position_array

    def _assign_positions(self, p: StepPayload, layout: Layout | None = None) -> list[tuple]:
        """Positions in forward order: layers as they first fired, then param layers that never did."""
        if len(self.position) == len(self.plan):
            return []  # every layer has its position (every step after the first, usually)
        new = [i for i in p.fired if i not in self.position]
        layout = layout or group(p.keys)
        by_code, layer_of = layout.by_code, layout.layer_of
        param_layers = {int(layer_of[j]) for code in (WN, WSQ, GN) for j in by_code.get(code, ())}
        new += sorted(i for i in param_layers if i not in self.position and i not in new)
        rows = []
        for i in new:
            pos = self.next_position
            self.next_position += 1
            self.position[i] = pos
            layer = self.plan[i]
            self.name_at[pos] = layer.name
            shapes = json.dumps(layer.param_shapes)
            rows.append((pos, layer.name, layer.type_name, layer.kind, layer.n_params, shapes, layer.role.value))
        return rows


def step_stats(step: int, derived: dict, position: dict[int, int], n_positions: int) -> StepStats:
    """The derived statistics of one step as a [stat, position] matrix (names sorted) and its mask."""
    cells = [(position[i], stat.value) for i, stat in derived if i in position]
    names = tuple(sorted({name for _, name in cells}))
    k = {name: j for j, name in enumerate(names)}
    flat = np.fromiter((k[name] * n_positions + pos for pos, name in cells), dtype=np.int64, count=len(cells))
    kept = np.fromiter((v for (i, _), v in derived.items() if i in position), dtype=np.float64, count=len(cells))
    values = np.full(len(names) * n_positions, np.nan)
    recorded = np.zeros(len(names) * n_positions, dtype=bool)
    values[flat], recorded[flat] = kept, True
    shape = (len(names), n_positions)
    return StepStats(step, names, values.reshape(shape), recorded.reshape(shape))


def _clip_factor(step: int, block: StepStats) -> list[tuple[int, str, float]]:
    """Per step: total gradient norm at the optimizer step over the total when the gradients were
    complete (1: nothing clipped them; < 1: clipping scaled them by this factor)."""
    rows = {name: k for k, name in enumerate(block.names)}
    if Stat.GRAD_NORM.value not in rows or Stat.GRAD_NORM_PRE_CLIP.value not in rows:
        return []
    post_at, pre_at = block.recorded[rows[Stat.GRAD_NORM.value]], block.recorded[rows[Stat.GRAD_NORM_PRE_CLIP.value]]
    if not pre_at.any() or pre_at.sum() != post_at.sum():
        return []
    post = block.values[rows[Stat.GRAD_NORM.value]][post_at]
    pre = block.values[rows[Stat.GRAD_NORM_PRE_CLIP.value]][pre_at]
    total_pre = math.sqrt(float(np.sum(pre * pre)))
    total_post = math.sqrt(float(np.sum(post * post)))
    if not (math.isfinite(total_pre) and math.isfinite(total_post)) or total_pre == 0:
        return []
    return [(step, "clip_factor", total_post / total_pre)]
