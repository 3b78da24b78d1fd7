"""The Run's side of a guard: where in the step the guard runs, and the host numbers it is given.

`guard_step` runs the skip gate once the step's gradients exist (at the optimizer's pre-hook, or
after the first call of a `step(closure)`'s closure). `observe_step` derives the recorded step's
statistics from the host values that step already transferred (probes.derive, the same formulas
the store gets) and hands them to the guard's triggers: no tensor is read here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .guard.runtime import GuardRunner
from .derive import derive
from .record import aggregate, transfer
from .rows import StepPayload
from .select import LayerPlan


def guard_step(guard: GuardRunner, step: int, closure: Any) -> Any:
    """Arm the gate for this step now, or, for `step(closure)`, when the closure's first call returns."""
    if not callable(closure):
        guard.before_update(step)
        return closure
    pending = [True]

    def closure_then_gate() -> Any:
        loss = closure()
        if pending:
            pending.clear()
            guard.before_update(step)
        return loss

    return closure_then_gate


def observe_step(guard: GuardRunner, plan: list[LayerPlan], p: StepPayload, guarded: list[np.ndarray]) -> list[tuple]:
    """Guard rows for one recorded step, from its payload (host numbers) and the gate's verdicts."""
    amp_scale = next((v for s, k, v in p.scalars if k == "amp_scale" and s == p.step), None)
    derived = derive(plan, aggregate(p.keys, p.values), p.numel, p.nonfinite, amp_scale)
    stats: dict[str, dict[str, float]] = {}
    for (i, stat), value in derived.items():
        stats.setdefault(stat.value, {})[plan[i].name] = value
    return guard.observe(p.step, tuple(layer.name for layer in plan), stats, p.scalars, guarded)


def observe_tail(guard: GuardRunner, step: int) -> list[tuple]:
    """At close: the gate's verdicts of the last steps, which no recorded step carried (every > 1)."""
    pending = guard.pending()
    if not pending:
        return []
    return guard.observe(step, (), {}, [], transfer(pending))
