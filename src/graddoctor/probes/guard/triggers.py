"""Triggers: small objects that read one step's host numbers and say whether a guard fires.

A trigger is any object with a `name`, a `skippable` flag (whether the device can skip the step
it fires on) and `check(obs) -> list[GuardEvent]`. It keeps its own running statistics, judged
against the run itself, and keeps non-finite values out of every one of them. Skippable triggers
also give the device the limit to compare the step's gradient norm with (`device_limit`).

Adding a trigger for a new statistic (issue 14: pre-clip gradient norms, log Z, attention logits)
means writing one such class that reads `obs.stat("<new stat name>")` (or `obs.totals` for a
whole-model number) and adding it to a `GuardRule`; nothing else changes.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Protocol

import numpy as np

from .events import GuardEvent, Observation


class Trigger(Protocol):
    name: str
    skippable: bool

    def check(self, obs: Observation) -> list[GuardEvent]: ...


def robust_center_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 * median absolute deviation (the normal-consistent MAD) of `values`."""
    median = float(np.median(values))
    return median, 1.4826 * float(np.median(np.abs(values - median)))


@dataclasses.dataclass
class NonFinite:
    """A NaN or Inf in the step's gradients (the device's own verdict), statistics or logged scalars.

    The event names the first layer, input side first, with a non-finite statistic, and which
    statistic it was. It fires on every such step (each one is skipped under the default guard).
    """

    name: str = "nonfinite"
    skippable: bool = True
    _reported: set = dataclasses.field(default_factory=set, repr=False)  # steps already named

    def check(self, obs: Observation) -> list[GuardEvent]:
        events = [
            GuardEvent(t.step, self.name, "the gradient norm is not finite", evidence={"grad_norm_total": t.grad_norm})
            for t in obs.totals if not math.isfinite(t.grad_norm)
        ]
        origin = _first_nonfinite(obs)
        # a loss logged after optimizer.step() arrives with the next record: not a new event for its own step
        bad_scalars = {k: v for k, v in obs.scalars.items()
                       if not math.isfinite(v) and obs.scalar_steps.get(k, obs.step) not in self._reported}
        self._reported = {e.step for e in events} | {obs.step} if (events or origin or bad_scalars) else set()
        if (origin or bad_scalars) and not any(e.step == obs.step for e in events):
            events.append(GuardEvent(obs.step, self.name, "a recorded value is not finite"))
        return [_with_origin(e, origin, bad_scalars) if e.step == obs.step else e for e in events]


# Where a non-finite value shows first, in the order the step computes values: the weights, then
# the forward pass (input side first), then the backward pass (output side first).
_WEIGHTS = ("weight_norm",)
_FORWARD = ("act_mean", "act_std", "act_zero_frac", "dead_frac", "saturated_frac")


def _first_nonfinite(obs: Observation) -> tuple[str, str, float] | None:
    backward = [s for s in obs.stats if s not in _WEIGHTS + _FORWARD]
    for stats, layers in ((_WEIGHTS, obs.layers), (_FORWARD, obs.layers), (backward, obs.layers[::-1])):
        for layer in layers:
            for stat in stats:
                value = obs.stat(stat).get(layer)
                if value is not None and not math.isfinite(value):
                    return layer, stat, value
    return None


def _with_origin(event: GuardEvent, origin: tuple | None, bad_scalars: dict[str, float]) -> GuardEvent:
    evidence = dict(event.evidence, **{f"scalar:{k}": v for k, v in bad_scalars.items()})
    if origin is None:
        return dataclasses.replace(event, evidence=evidence)
    layer, stat, value = origin
    evidence.update(first_stat=stat, first_value=value)
    reason = f"{event.reason}; the first non-finite value in the order the step computes them (weights, forward, backward) is {stat}={value} in {layer!r}"
    return dataclasses.replace(event, layer=layer, reason=reason, evidence=evidence)


@dataclasses.dataclass
class GradSpike:
    """The whole-model gradient norm far above its recent robust level, judged on a log scale.

    The limit is exp(median + k * max(scale, min_scale)) over the last `window` finite log-norms
    (scale: 1.4826 * MAD), armed once `min_history` of them are known. Non-finite norms never
    enter the window (one NaN must not poison the next `window` steps, as in OLMo-core's mean+6σ
    window). Spiking norms do enter it, so a lasting change of level is accepted after about half
    a window instead of skipping forever (an absolute limit skipped 393 of 394 steps in one report).
    """

    k: float = 6.0                # 6 robust sigmas: OLMo-core's skip-step rule uses mean + 6σ
    window: int = 128             # OLMo-core's window
    min_history: int = 20         # a scale from fewer points is mostly noise
    min_scale: float = 0.05       # log-scale floor: a perfectly steady norm still tolerates ~35% (e^{6*0.05})
    name: str = "grad_spike"
    skippable: bool = True
    _history: collections.deque = dataclasses.field(default_factory=collections.deque, repr=False)

    def device_limit(self) -> float:
        """The gradient norm above which the next step is a spike (inf until armed)."""
        if len(self._history) < self.min_history:
            return math.inf
        median, scale = robust_center_scale(np.array(self._history))
        return math.exp(median + self.k * max(scale, self.min_scale))

    def check(self, obs: Observation) -> list[GuardEvent]:
        events = []
        for t in obs.totals:
            if not (math.isfinite(t.grad_norm) and t.grad_norm > 0):
                continue  # non-finite: the NonFinite trigger's; never in the window
            limit = self.device_limit()
            if t.grad_norm > limit:
                events.append(GuardEvent(
                    t.step, self.name, f"the gradient norm {t.grad_norm:.3g} is above the run's limit {limit:.3g} "
                    f"(median of the last {len(self._history)} steps x e^({self.k:g} robust sigmas))",
                    evidence={"grad_norm_total": t.grad_norm, "limit": limit},
                ))
            self._history.append(math.log(t.grad_norm))
            if len(self._history) > self.window:
                self._history.popleft()
        return events


@dataclasses.dataclass
class LargeUpdates:
    """A layer's update_ratio (||Δw||/||w||) far above its own early median, on consecutive steps.

    The baseline of each layer is the median of its first `baseline_steps` finite ratios after
    step 0 (Adam's first step is special). The trigger fires once per episode: when the ratio is
    above max(`factor` x baseline, `floor`) on `consecutive` recorded steps, and again only after
    it came back below. Update norms grew about twice as early as the loss spiked in marin#1368.
    """

    factor: float = 10.0          # ten times the layer's own early level
    floor: float = 1e-2           # ten times the ~1e-3 of healthy training: warm-up from a tiny lr stays quiet
    baseline_steps: int = 20      # recorded steps that make the baseline
    consecutive: int = 2          # one noisy step is not a trend
    name: str = "large_updates"
    skippable: bool = False
    _early: dict = dataclasses.field(default_factory=dict, repr=False)
    _above: dict = dataclasses.field(default_factory=dict, repr=False)

    def check(self, obs: Observation) -> list[GuardEvent]:
        events = []
        for layer, ratio in (obs.stat("update_ratio") or obs.stat("update_ratio_est")).items():  # exact, else the estimate
            if not math.isfinite(ratio) or obs.step == 0:
                continue
            early = self._early.setdefault(layer, [])
            if len(early) < self.baseline_steps:
                early.append(ratio)
                continue
            baseline = float(np.median(early))
            limit = max(self.factor * baseline, self.floor)
            run = self._above.get(layer, 0)
            self._above[layer] = run + 1 if ratio > limit else 0
            if self._above[layer] == self.consecutive:
                events.append(GuardEvent(
                    obs.step, self.name,
                    f"update_ratio {ratio:.3g} above {limit:.3g} ({self.factor:g}x the layer's early median "
                    f"{baseline:.3g}) on {self.consecutive} recorded steps: the loss may diverge next",
                    layer=layer, evidence={"update_ratio": ratio, "early_median": baseline, "limit": limit},
                ))
        return events


@dataclasses.dataclass
class DeadLayers:
    """A layer whose units are all silent (dead_frac at least `threshold`) on `consecutive` recorded steps.

    Fires once per episode per layer. dead_frac at one step counts units that never fired on that
    step's batch; asking for the whole layer, many steps in a row, keeps a quiet batch from alarming.
    """

    threshold: float = 0.99       # (nearly) the whole layer, not a fraction: that is diagnose's job
    consecutive: int = 20         # a dead layer stays dead; a silent batch does not last 20 steps
    name: str = "dead_layers"
    skippable: bool = False
    _run: dict = dataclasses.field(default_factory=dict, repr=False)

    def check(self, obs: Observation) -> list[GuardEvent]:
        events = []
        for layer, frac in obs.stat("dead_frac").items():
            if not math.isfinite(frac):
                continue
            self._run[layer] = self._run.get(layer, 0) + 1 if frac >= self.threshold else 0
            if self._run[layer] == self.consecutive:
                events.append(GuardEvent(
                    obs.step, self.name, f"{frac:.0%} of the units are silent on {self.consecutive} recorded steps "
                    f"in a row: the layer passes no gradient", layer=layer, evidence={"dead_frac": frac},
                ))
        return events
