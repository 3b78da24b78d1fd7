"""Guardrails while training: triggers over one recorded step's host numbers, and actions.

`watch(..., guard="default")` warns on every online finding, skips steps whose gradients are not
finite (decided on the device) and stops after 5 skipped steps in a row. docs/guards.md says what
each action does to training and what it cannot undo.
"""

from .events import GuardEvent, GuardStop, GuardWarning, Observation, StepTotal
from .gate import SUPPORTED as SKIP_OPTIMIZERS
from .policy import ACTIONS, Guard, GuardRule, default_guard, resolve_guard
from .triggers import DeadLayers, GradSpike, LargeUpdates, NonFinite, Trigger

__all__ = [
    "Guard", "GuardRule", "GuardEvent", "GuardStop", "GuardWarning", "Observation", "StepTotal", "Trigger",
    "NonFinite", "GradSpike", "LargeUpdates", "DeadLayers", "default_guard", "resolve_guard", "ACTIONS",
    "SKIP_OPTIMIZERS",
]
