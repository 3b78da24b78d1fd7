"""The step clock: when a step begins and ends, whether it is recorded, and when its gradients are read.

One record per optimizer step. The optimizer's step pre-hook reads the parameter gradients and
weights (after any clipping or GradScaler unscaling the loop does before `step`), or, for
`optimizer.step(closure)`, the closure's first call does when it returns (LBFGS calls it again at
moved weights); `run.read_gradients()` takes that over for frameworks whose closure does more
after the backward. The post-hook measures the update, hands the record to the sink and begins
the next step. A GradScaler iteration that ran no optimizer step was skipped: its partials are
dropped and counted. Which recorded steps take the full tier is the FullSchedule's call.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import WatchConfig
from .activations import ActivationProbes
from .guard.events import GuardStop
from .guarded import guard_step
from .hooks import AttributePatch
from .params import ParamReader
from .record import StepRecord
from .schedule import FullSchedule
from .sink import StepSink


class StepClock:
    """The step in progress of one Run, its `StepRecord` (None when not recorded) and the step hooks."""

    def __init__(
        self,
        config: WatchConfig,
        optimizer: torch.optim.Optimizer | None,
        scaler: Any,
        *,
        start_step: int,
        acts: ActivationProbes,
        params: ParamReader,
        sink: StepSink,
        guard: Any,
        time_probe: Any,
    ) -> None:
        self.config, self.optimizer, self.scaler = config, optimizer, scaler
        self.start_step = start_step
        self._acts, self._params, self._sink, self._guard, self._time = acts, params, sink, guard, time_probe
        self._schedule = FullSchedule(config)
        self.record: StepRecord | None = None
        self._caller_reads = False  # read_gradients() was called: the optimizer's pre-hook leaves gradients to it
        self._steps_taken = self._steps_at_update = self._amp_skipped = 0
        self.begin(start_step)

    def attach(self, add: Any) -> None:
        if self.optimizer is not None:
            add(self.optimizer.register_step_pre_hook(self._on_pre_step))
            add(self.optimizer.register_step_post_hook(self._on_post_step))
        if self.scaler is not None and callable(getattr(self.scaler, "update", None)):
            add(AttributePatch(self.scaler, "update", self._wrap_scaler_update(self.scaler.update)))

    # -- what the user's calls mean --------------------------------------------------------------

    def log(self, scalars: dict[str, float | torch.Tensor]) -> None:
        """Put logged scalars on their step: the one in progress, or, before its first forward pass,
        the step just taken (dropped when neither is recorded)."""
        if not self._acts.forward_seen and self.step > self.start_step:
            step = self.step - 1
            if step % self.config.every == 0:
                self._sink.late_logs.extend((step, k, _detached(v)) for k, v in scalars.items())
        elif self.record is not None:
            self.record.logged.update({k: _detached(v) for k, v in scalars.items()})

    def step_without_optimizer(self) -> None:
        """run.step(): the end of a step when no optimizer is watched."""
        self._on_pre_step(None, (), {})
        self._on_post_step(None, (), {})

    def read_gradients(self) -> None:
        """run.read_gradients(): read the step's gradients now, and from now on leave them to the caller."""
        rec = self.record
        if not self._caller_reads and rec is not None:  # step(closure): the pre-hook read before the backward
            self._params.discard(rec)
        self._caller_reads = True
        if rec is not None:
            self._read_step_gradients(rec)

    # -- the optimizer's and GradScaler's hooks ------------------------------------------------------

    def _on_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> tuple[Any, Any] | None:
        rec = self.record
        # the hook gets step's own (args, kwargs): args[0] is the optimizer, args[1] the closure
        closure = (kwargs.get("closure") or (args[1] if len(args) > 1 else None)) if optimizer is not None else None
        if self._guard is not None:  # the skip gate runs on every step, recorded or not
            closure = guard_step(self._guard, self.step, closure)
        if rec is None or (optimizer is not None and self._caller_reads):
            return _with_closure(args, kwargs, closure) if callable(closure) and self._guard is not None else None
        if callable(closure):  # step(closure): forward and backward run inside step, after this hook
            return _with_closure(args, kwargs, self._read_after(closure, rec))
        self._read_step_gradients(rec)
        return None

    def _read_after(self, closure: Any, rec: StepRecord) -> Any:
        """`closure`, reading the step's gradients when its first call returns (LBFGS calls it again
        later, at moved weights): before any update, so the weight snapshot is still the step's own.
        A `read_gradients()` inside the closure (Lightning) has read them already."""
        pending = [True]

        def closure_then_read() -> Any:
            loss = closure()
            if pending and not self._caller_reads and rec is self.record:
                pending.clear()
                self._read_step_gradients(rec)
            return loss

        return closure_then_read

    def _read_step_gradients(self, rec: StepRecord) -> None:
        self._params.before_update(rec)
        self._acts.put_pre_clip(rec, self._params.owner)
        scale = self._amp_scale()
        if scale is not None:
            rec.logged["amp_scale"] = scale
            rec.logged["amp_skipped_steps"] = float(self._amp_skipped)

    def _on_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        rec = self.record
        if self._guard is not None:  # before the update is measured: a dropped update measures 0
            self._guard.after_update()
        if rec is not None:
            if self.optimizer is not None:
                self._params.after_update(rec)
            self._sink.close_step(rec, no_forward=self._acts.check_forwards_seen(rec))
        self._schedule.step_ended(self.step, rec is not None, rec is not None and rec.full)
        self._steps_taken += 1
        self.begin(self.step + 1)
        if self._guard is not None and self._guard.stop_event is not None:
            self._sink.flush(late_logs=False)  # every step before the stop is in the store when GuardStop is raised
            raise GuardStop(self._guard.stop_event)

    def _wrap_scaler_update(self, update: Any) -> Any:
        """GradScaler.update runs once per iteration, after scaler.step: if no optimizer step ran in
        between, GradScaler skipped it (inf/NaN in the scaled gradients). That iteration is not a
        step: its partial statistics are dropped, not merged into the next step, and counted."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self._steps_taken == self._steps_at_update and self.record is not None:
                self._amp_skipped += 1
                self.begin(self.step)
                self._acts.mark_forward_seen()  # a run.log after this belongs to the step to come
            self._steps_at_update = self._steps_taken
            return update(*args, **kwargs)

        return wrapped

    # -- step bookkeeping ------------------------------------------------------------------------

    def begin(self, step: int) -> None:
        """Step `step` begins: recorded (cheap or full tier) or not, as `every` and the schedule say."""
        self.step = step
        self._sink.begin(step)
        if step % self.config.every:
            rec = None
        else:
            hist_every = self.config.hist_every
            rec = StepRecord(step, hist=bool(hist_every) and step % hist_every == 0, full=self._schedule.full_at(step))
        self.record = rec
        self._acts.begin(rec)
        full = rec if rec is not None and rec.full else None
        if self._time is not None:  # per-time-step statistics: full-tier steps; W_hh's bound: first, then with histograms
            self._time.begin(full, bound=full is not None and full.hist)

    def _amp_scale(self) -> torch.Tensor | None:
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        scale = getattr(self.scaler, "_scale", None)  # the device tensor: get_scale() would sync
        return scale.detach().reshape(()) if isinstance(scale, torch.Tensor) else None


def _with_closure(args: tuple, kwargs: dict, closure: Any) -> tuple[tuple, dict]:
    """`optimizer.step`'s (args, kwargs) with its closure replaced, wherever it was passed."""
    if "closure" in kwargs:
        return args, {**kwargs, "closure": closure}
    return (args[0], closure, *args[2:]), kwargs


def _detached(value: float | torch.Tensor) -> float | torch.Tensor:
    return value.detach().reshape(()) if isinstance(value, torch.Tensor) else float(value)
