"""What a guard does: rules (a trigger and its actions), and the defaults `guard="default"` means."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Union

from ...errors import ConfigError
from .events import GuardEvent
from .triggers import DeadLayers, GradSpike, LargeUpdates, NonFinite, Trigger

ACTIONS = ("warn", "skip", "stop")
Action = Union[str, Callable[[GuardEvent], Any]]  # a name in ACTIONS, or a callback taking the event


@dataclasses.dataclass(frozen=True)
class GuardRule:
    """A trigger and what to do when it fires: 'warn', 'skip', 'stop' and/or callbacks.

    'skip' is only for triggers whose firing the device can decide before the update
    (`trigger.skippable`: non-finite gradients, gradient-norm spikes).
    """

    trigger: Trigger
    actions: tuple[Action, ...] = ("warn",)

    def __post_init__(self) -> None:
        actions = (self.actions,) if isinstance(self.actions, str) or callable(self.actions) else tuple(self.actions)
        object.__setattr__(self, "actions", actions)
        for action in actions:
            if not callable(action) and action not in ACTIONS:
                raise ConfigError(f"guard action {action!r} is unknown; use one of {ACTIONS} or a callable(event).")
        if "skip" in actions and not getattr(self.trigger, "skippable", False):
            raise ConfigError(
                f"the trigger {self.trigger.name!r} cannot skip a step: the device decides a skip before the update, "
                f"and only non-finite gradients and gradient-norm spikes are known then. Use 'warn' or 'stop'."
            )


@dataclasses.dataclass(frozen=True)
class Guard:
    """Guard rules evaluated while training, on the host, at step boundaries.

    Example:
        >>> g = Guard(rules=(GuardRule(NonFinite(), ("warn", "skip")), GuardRule(GradSpike(), "stop")))
        >>> with graddoctor.watch(model, opt, guard=g) as run:   # doctest: +SKIP
        ...     ...

    Attributes:
        rules: the rules, each evaluated on every recorded step.
        max_consecutive_skips: stop (GuardStop) when this many steps in a row were skipped; 0: never.
    """

    rules: tuple[GuardRule, ...] = ()
    max_consecutive_skips: int = 5  # a run that cannot take 5 steps in a row will not recover by skipping

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        if not all(isinstance(r, GuardRule) for r in self.rules):
            raise ConfigError(f"Guard(rules=...) takes GuardRule objects, got {[type(r).__name__ for r in self.rules]}.")
        if not isinstance(self.max_consecutive_skips, int) or self.max_consecutive_skips < 0:
            raise ConfigError(f"max_consecutive_skips must be an int >= 0, got {self.max_consecutive_skips!r}.")

    @property
    def skips(self) -> bool:
        return any("skip" in rule.actions for rule in self.rules)

    def fresh(self) -> "Guard":
        """A copy whose triggers start with empty running statistics (one per run)."""
        return Guard(tuple(GuardRule(copy.deepcopy(r.trigger), r.actions) for r in self.rules), self.max_consecutive_skips)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [{"trigger": repr(r.trigger), "actions": [a if isinstance(a, str) else getattr(a, "__name__", repr(a))
                                                              for a in r.actions]} for r in self.rules],
            "max_consecutive_skips": self.max_consecutive_skips,
        }


def default_guard() -> Guard:
    """`guard="default"`: warn on every online finding, skip non-finite steps, stop after 5 skips in a row."""
    return Guard(rules=(
        GuardRule(NonFinite(), ("warn", "skip")),
        GuardRule(GradSpike(), ("warn",)),
        GuardRule(LargeUpdates(), ("warn",)),
        GuardRule(DeadLayers(), ("warn",)),
    ))


def resolve_guard(guard: Any) -> Guard | None:
    """`watch(guard=...)`: None or False (off), "default", a Guard, or a list of GuardRules."""
    if guard is None or guard is False:
        return None
    if isinstance(guard, str):
        if guard != "default":
            raise ConfigError(f"guard={guard!r} is unknown; pass guard='default', a graddoctor.probes.guard.Guard, or None.")
        return default_guard()
    if isinstance(guard, Guard):
        return guard.fresh()
    if isinstance(guard, (list, tuple)) and all(isinstance(r, GuardRule) for r in guard):
        return Guard(rules=tuple(guard)).fresh()
    raise ConfigError(f"guard= takes None, 'default', a Guard or a list of GuardRule, got {type(guard).__name__}.")
