"""What a guard sees and what it says: one step's host numbers in, events and actions out.

Pure host-side data: no torch. Built by the Run at a step boundary from the values the recorded
step already transferred (probes), read by the triggers (guard.triggers), written to the store.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ...errors import GradDoctorError


@dataclasses.dataclass(frozen=True)
class StepTotal:
    """The whole-model gradient norm of one optimizer step, and whether the device skipped it.

    `grad_norm` is the L2 norm of every gradient the optimizer holds, read before the update
    (after any clipping the loop does before `optimizer.step()`). `limit` is the spike limit the
    device compared it with (inf when no spike skip is armed).
    """

    step: int
    grad_norm: float
    skipped: bool
    limit: float = math.inf


@dataclasses.dataclass(frozen=True)
class Observation:
    """The host numbers of one recorded step, as a trigger reads them.

    Attributes:
        step: the recorded optimizer step.
        layers: watched layer names, in the plan's order.
        stats: statistic name -> {layer: value} for the layers that have it (NaN/Inf kept as is).
        scalars: `run.log` keys and `lr/group{i}` logged for this step (the loss of step t is
            usually logged after `optimizer.step()`, so it arrives with step t+1's record).
        totals: one `StepTotal` per optimizer step since the last observation (several when
            `every` > 1 and the skip gate runs on every step; one derived from the layers' norms
            otherwise).
    """

    step: int
    layers: tuple[str, ...]
    stats: dict[str, dict[str, float]]
    scalars: dict[str, float]
    totals: tuple[StepTotal, ...]
    scalar_steps: dict[str, int] = dataclasses.field(default_factory=dict)  # the step each scalar was logged for

    def stat(self, name: str) -> dict[str, float]:
        return self.stats.get(name, {})


@dataclasses.dataclass(frozen=True)
class GuardEvent:
    """One trigger firing, or one action taken: what the store's `guard_actions` rows hold.

    `action` is 'warn', 'skip', 'stop' or 'callback'; `trigger` the trigger's name
    ('nonfinite', 'grad_spike', 'large_updates', 'dead_layers', 'consecutive_skips', ...);
    `layer` the layer named (None: the whole model); `evidence` a flat dict of the numbers.
    """

    step: int
    trigger: str
    reason: str
    layer: str | None = None
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    action: str = "warn"

    def with_action(self, action: str) -> "GuardEvent":
        return dataclasses.replace(self, action=action)

    def __str__(self) -> str:
        where = f" in {self.layer!r}" if self.layer else ""
        return f"step {self.step}: {self.trigger}{where}: {self.reason}"


class GuardWarning(UserWarning):
    """Warned by a guard rule whose action is 'warn' (training goes on)."""


class GuardStop(GradDoctorError, RuntimeError):
    """Raised at a step boundary by a guard rule whose action is 'stop', after the store is flushed.

    `event` is the `GuardEvent` that stopped training. Catch it to end training your own way
    (checkpoint, lower the learning rate, resume from an earlier checkpoint).
    """

    def __init__(self, event: GuardEvent) -> None:
        super().__init__(
            f"graddoctor guard stopped training at {event}. Every step before it is in the run store; "
            f"`graddoctor diagnose` names what went wrong."
        )
        self.event = event
