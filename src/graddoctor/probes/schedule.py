"""Which recorded steps record the full tier: a fixed interval, or one chosen from a cost budget.

The cheap tier (gradient and dL/d output norms, non-finite detection, scalars) is recorded at every
recorded step; the full tier (activation statistics, weight norms, update_ratio, histograms, the
transformer and through-time statistics) on the steps this says (WatchConfig.full_at).

With `budget` (a share of step time, e.g. 0.03), the interval follows from host timings of the
run's own steps: the time from one optimizer step to the next, split by tier. No timing syncs the
device: on a GPU the one transfer of each recorded step already waits for its work, so recorded
steps' periods include their device time.
"""

from __future__ import annotations

import collections
import math
import statistics
import time

from ..config import WatchConfig

_HISTORY = 8       # periods kept per tier
_MIN_SAMPLES = 3   # of each tier before the interval moves
MAX_INTERVAL = 10_000  # steps: the full tier is never switched off by the budget


class FullSchedule:
    """The full tier's schedule of one run."""

    def __init__(self, config: WatchConfig) -> None:
        self.config = config
        self.full_every = config.full_every
        self._periods: dict[bool, collections.deque] = {True: collections.deque(maxlen=_HISTORY),
                                                        False: collections.deque(maxlen=_HISTORY)}
        self._last: float | None = None               # perf_counter at the previous optimizer step's end
        self._next_full: int | None = None            # budget mode: the next full-tier step

    def full_at(self, step: int) -> bool:
        if self.config.budget is None or self._next_full is None:
            return self.config.full_at(step, self.full_every)
        cfg = self.config
        if step < cfg.full_first * cfg.every or step >= self._next_full:
            return True
        return bool(cfg.hist_every) and step % cfg.hist_every == 0 or bool(cfg.attention_every) and step % cfg.attention_every == 0

    def step_ended(self, step: int, recorded: bool, full: bool) -> None:
        """Called after each optimizer step (budget mode only times them)."""
        if self.config.budget is None:
            return
        now = time.perf_counter()
        if self._last is not None and recorded:
            self._periods[full].append(now - self._last)  # this step's period, by the tier it recorded
        self._last = now
        if full and recorded:
            self._retune(step)

    def _retune(self, step: int) -> None:
        full, cheap = self._periods[True], self._periods[False]
        every = self.config.every
        if len(full) >= _MIN_SAMPLES and len(cheap) >= _MIN_SAMPLES:
            self.full_every = interval(statistics.median(full), statistics.median(cheap), self.config.budget, every)
        self._next_full = step + self.full_every


def interval(full_period: float, cheap_period: float, budget: float, every: int) -> int:
    """The full tier's interval (a multiple of `every`) that adds about `budget` x the cheap step:
    one full step in k adds (full - cheap) / k per step."""
    extra = max(full_period - cheap_period, 0.0)
    if cheap_period <= 0:
        return every
    k = math.ceil(extra / (budget * cheap_period) / every) * every
    return min(max(k, every), MAX_INTERVAL)
