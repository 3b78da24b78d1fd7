"""GuardRunner: a guard at work in one run. The Run calls it at fixed moments of each step.

Moments: `before_update` / `after_update` around every optimizer step (the skip gate, on the
device), `pending()` when a recorded step transfers its values (the gate's per-step verdicts ride
in the same copy), `observe(...)` right after that transfer (triggers and actions, on the host),
and `stop_event` at the step boundary. Nothing here reads a device value by itself.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import torch

from .events import GuardEvent, GuardWarning, Observation, StepTotal
from .gate import SkipGate
from .policy import Guard
from .triggers import GradSpike, NonFinite

GuardRow = tuple[int, str, str, str | None, str, str]  # step, action, trigger, layer, reason, evidence JSON


class GuardRunner:
    def __init__(self, guard: Guard, optimizer: Any) -> None:
        self.guard = guard
        skipping = [r.trigger for r in guard.rules if "skip" in r.actions]
        self._spike = next((t for t in skipping if isinstance(t, GradSpike)), None)
        self.gate = None
        if skipping:
            finite = any(isinstance(t, NonFinite) for t in skipping)
            self.gate = SkipGate(optimizer, check_finite=finite, check_spike=self._spike is not None)
        self._consecutive = 0
        self._fired_last: set[tuple[str, str | None]] = set()  # warned once per episode
        self.stop_event: GuardEvent | None = None
        self.actions: list[GuardEvent] = []  # every action taken, also written to the store

    # -- device side (every optimizer step) --------------------------------------------------

    def before_update(self, step: int) -> None:
        if self.gate is not None:
            self.gate.before_update(step)

    def after_update(self) -> None:
        if self.gate is not None:
            self.gate.after_update()

    def pending(self) -> list[torch.Tensor]:
        """The gate's verdicts since the last recorded step, to append to that step's one transfer."""
        if self.gate is None:
            return []
        return [t for _, total, ok, _ in self.gate.pending for t in (total, ok)]

    # -- host side (recorded steps) ----------------------------------------------------------

    def observe(self, step: int, layers: tuple[str, ...], stats: dict[str, dict[str, float]],
                scalars: list[tuple[int, str, float]], host: list[np.ndarray]) -> list[GuardRow]:
        """Run every trigger on the step's host numbers, take the actions, return the store rows.

        `scalars` are (step, key, value) rows; `host` the gate's verdicts, as transferred.
        """
        totals = self._totals(step, stats, host)
        ordered = sorted(scalars, key=lambda r: r[0])
        obs = Observation(step, layers, stats, {k: v for _, k, v in ordered}, totals, {k: s for s, k, _ in ordered})
        taken: list[GuardEvent] = []
        for t in totals:
            if t.skipped:
                taken.append(_skip_event(t))
        fired = [(rule, event) for rule in self.guard.rules for event in rule.trigger.check(obs)]
        for rule, event in fired:
            taken.extend(self._act(event, rule.actions))
        taken.extend(self._count_skips(totals))
        self._fired_last = {(e.trigger, e.layer) for _, e in fired}
        if self.gate is not None and self._spike is not None:
            self.gate.set_limit(self._spike.device_limit())
        self.actions.extend(taken)
        return [_row(e) for e in taken]

    def _totals(self, step: int, stats: dict[str, dict[str, float]], host: list[np.ndarray]) -> tuple[StepTotal, ...]:
        if self.gate is None:  # no gate: the watched layers' norms of this recorded step
            norms = list(stats.get("grad_norm", {}).values())
            return (StepTotal(step, math.sqrt(sum(n * n for n in norms)), skipped=False),) if norms else ()
        pending, self.gate.pending = self.gate.pending, []
        return tuple(StepTotal(s, float(host[2 * j]), not bool(host[2 * j + 1]), limit)
                     for j, (s, _, _, limit) in enumerate(pending))

    def _act(self, event: GuardEvent, actions: tuple) -> list[GuardEvent]:
        out = []
        for action in actions:
            if action == "skip":
                continue  # the device decided it; recorded from the gate's verdicts
            if action == "warn":
                if (event.trigger, event.layer) in self._fired_last:
                    continue  # the same episode as the previous recorded step: warned already
                warnings.warn(GuardWarning(f"graddoctor guard: {event}"), stacklevel=_caller_level())
            elif action == "stop":
                self.stop_event = self.stop_event or event.with_action("stop")
            else:
                action(event)
                action = "callback"
            out.append(event.with_action(action))
        return out

    def _count_skips(self, totals: tuple[StepTotal, ...]) -> list[GuardEvent]:
        limit = self.guard.max_consecutive_skips
        for t in totals:
            self._consecutive = self._consecutive + 1 if t.skipped else 0
            if limit and self._consecutive >= limit and self.stop_event is None:
                self.stop_event = GuardEvent(
                    t.step, "consecutive_skips", f"{self._consecutive} steps in a row were skipped: skipping is not "
                    f"helping (max_consecutive_skips={limit})", evidence={"consecutive_skips": self._consecutive},
                    action="stop",
                )
                return [self.stop_event]
        return []

    def release(self) -> None:
        if self.gate is not None:
            self.gate.release()


def _caller_level() -> int:
    """The stacklevel of the first frame outside graddoctor and torch: the user's `optimizer.step()` line."""
    import os
    import sys

    ours = (os.path.dirname(os.path.dirname(__file__)), os.path.dirname(torch.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(ours):
        frame, level = frame.f_back, level + 1
    return level


def _skip_event(t: StepTotal) -> GuardEvent:
    if not math.isfinite(t.grad_norm):
        return GuardEvent(t.step, "nonfinite", "the gradient norm is not finite: the update was not applied",
                          evidence={"grad_norm_total": t.grad_norm}, action="skip")
    return GuardEvent(t.step, "grad_spike", f"the gradient norm {t.grad_norm:.3g} is above the limit {t.limit:.3g}: "
                      f"the update was not applied", evidence={"grad_norm_total": t.grad_norm, "limit": t.limit},
                      action="skip")


def _row(e: GuardEvent) -> GuardRow:
    return (e.step, e.action, e.trigger, e.layer, e.reason, json.dumps(e.evidence, default=repr, allow_nan=True))


def start_guard(guard: Any, optimizer: Any, *, distributed: bool) -> GuardRunner | None:
    """The runner for `watch(guard=...)`, or None when guards are off (the default)."""
    from .policy import resolve_guard

    resolved = resolve_guard(guard)
    if resolved is None:
        return None
    if distributed:
        from ...errors import ConfigError

        raise ConfigError(
            "guard= is not available under torch.distributed yet: every rank would have to take the same action at "
            "the same step. Watch without guard=, or guard a single-process run."
        )
    return GuardRunner(resolved, optimizer)
