"""Run: the object `graddoctor.watch` returns. A context manager wiring small parts, each with one job.

- the layer plan (probes/select.py): which modules and parameters are watched, decided once;
- the activation probes (probes/activations.py): forward hooks, dL/d output, attention sites,
  the model's logits, gradients before clipping;
- the parameter probes (probes/params.py): gradients and weights before the update, the update after it;
- the per-time-step probes of recurrent layers (probes/through_time.py);
- the step clock (probes/clock.py): optimizer hooks, closures, GradScaler skips, which steps record what;
- the sink (probes/sink.py): one transfer per recorded step, exact recounts, the reduction over
  ranks, the writer; the session (probes/session.py): the store and the run's identity.

Timing of every reading (docs/statistics.md): activation statistics in forward hooks, dL/d output in
tensor hooks during backward, parameter gradients and weights in the optimizer's step pre-hook
(after any clipping or GradScaler unscaling the loop does before `step`), updates in its post-hook.
"""

from __future__ import annotations

import atexit
import functools
import time
import weakref
from typing import Any

import torch
from torch import nn

from ..config import RunStatus, WatchConfig
from ..errors import ConfigError
from ..store.sqlite import RunStore
from ..store.view import RunView
from . import stats
from .activations import ActivationProbes
from .clock import StepClock
from .guard.runtime import start_guard
from .hooks import HandleGroup
from .params import ParamReader
from .select import plan_layers
from .session import open_session
from .setup import check_inputs, unwrap
from .sink import StepSink
from .through_time import TimeProbe

class Run:
    """A watched training run: a context manager that records into a run store.

    Use it through `graddoctor.watch`. Inside the `with` block, `run.log(**scalars)` adds scalars
    to the current step and, without an optimizer, `run.step()` marks the end of each step.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        store: str | RunStore,
        name: str | None,
        config: WatchConfig,
        scaler: Any = None,
        user_config: dict[str, Any] | None = None,
        resume: bool = False,
        reducer: Any = None,
        guard: Any = None,
        mirror: Any = None,
    ) -> None:
        if config.budget is not None and reducer is not None:
            raise ConfigError("watch(budget=...) times each rank's own steps, so ranks could choose different "
                              "full-tier steps; under torch.distributed give full_every= instead.")
        self.model, self.optimizer, self.config, self.scaler = unwrap(model), optimizer, config, scaler
        self._plan = plan = plan_layers(self.model, config.include, config.exclude)
        check_inputs(self.model, plan, optimizer, config)
        self._guard = start_guard(guard, optimizer, distributed=reducer is not None)  # None: guards off
        name = name or f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        self._session = open_session(self.model, plan, optimizer, config, store, name, user_config=user_config,
                                     resume=resume, reducer=reducer, mirror=mirror)
        self.run_id, self.name = self._session.run_id, self._session.name
        self._writer = self._session.writer
        # Several processes (probes/distributed.py): decided once here, never per hook call.
        local = reducer.local_of if reducer is not None and reducer.any_sharded else None
        self._handles = HandleGroup()
        self._scratch = stats.Scratch()  # work buffers, shared by the activation and parameter probes
        params = [p for layer in plan for p in layer.params]
        owner = [i for i, layer in enumerate(plan) for _ in layer.params]
        self._param_side = ParamReader(params, owner, snapshot=config.update_ratio if optimizer is not None else False,
                                       scratch=self._scratch, local=local)
        self._acts = ActivationProbes(self.model, plan, params, config, self._scratch, reducer=reducer,
                                      handles=self._handles)
        # Per-time-step statistics of recurrent layers (None without any: no hook, no cost). Not under
        # torch.distributed: their rows are not reduced over ranks (docs/through-time.md).
        self._time = TimeProbe.for_plan(plan, lambda: self._clock.record) if reducer is None else None
        self._sink = StepSink(plan, self._writer, optimizer=optimizer, reducer=reducer, local=local,
                              guard=self._guard, time_probe=self._time)
        self._clock = StepClock(config, optimizer, scaler, start_step=self._session.start_step, acts=self._acts,
                                params=self._param_side, sink=self._sink, guard=self._guard, time_probe=self._time)
        self._closed = False

    def attach(self) -> "Run":
        try:  # per module, the order of the hooks is the activation probes', then the per-time-step ones
            self._acts.attach(self._handles.add)
            if self._time is not None:
                self._time.attach(self._handles.add)
            self._clock.attach(self._handles.add)
        except BaseException:
            self._handles.remove()
            raise
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)  # a run left open (no `with`, no close()) still flushes at exit
        return self

    # -- the context manager -------------------------------------------------------------------

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        else:
            self.close(status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")

    def close(self, status: RunStatus = RunStatus.FINISHED, error: str | None = None) -> None:
        """Remove every hook, write what is left and mark the run finished (or failed)."""
        if self._closed:
            return
        self._closed = True
        self._handles.remove()
        if getattr(self, "_at_exit", None) is not None:
            atexit.unregister(self._at_exit)
        try:
            self._sink.finish(self._clock.step)
        finally:
            if self._guard is not None:
                self._guard.release()
            self._session.close(str(status), error)
            self._param_side.release()
            self._acts.release()
            self._scratch = stats.Scratch()

    # -- user calls ----------------------------------------------------------------------------

    def log(self, **scalars: float | torch.Tensor) -> None:
        """Add scalars (loss, accuracy...) to the step in progress; tensors are read without a sync.

        Called after `optimizer.step()` and before the next forward pass, they belong to the
        step just taken. Values logged on steps that are not recorded are dropped.
        """
        for key, value in scalars.items():
            if not isinstance(value, (int, float, torch.Tensor)) or (isinstance(value, torch.Tensor) and value.numel() != 1):
                raise ConfigError(f"run.log({key}=...) takes a number or a one-element tensor, got {value!r:.80}.")
        self._check_open("log")
        self._clock.log(scalars)

    def step(self) -> None:
        """Mark the end of a training step when watching without an optimizer (after backward)."""
        self._check_open("step")
        if self.optimizer is not None:
            raise ConfigError("run.step() is for watching without an optimizer; steps are taken from optimizer.step() here.")
        self._clock.step_without_optimizer()

    def read_gradients(self) -> None:
        """Read the parameter gradients (and the weights before the update) of the step in progress, now.

        By default they are read in the optimizer's step pre-hook or, for `optimizer.step(closure)`
        (forward and backward run inside `step`), when the closure's first call returns. A
        framework whose closure does more after the backward (Lightning's clips the gradients)
        calls this from its hook between the backward and that (Lightning's
        `on_before_optimizer_step`), on every optimizer step: from the first call on, the hooks
        leave the gradients to it, and what they read earlier in the same step is replaced. The
        update (`update_ratio`) is still measured in the optimizer's post-hook.
        """
        self._check_open("read_gradients")
        self._clock.read_gradients()

    def view(self) -> RunView:
        """What this run has recorded so far, read back from the store (also after the block)."""
        return self._session.read(None if self._closed else self._sink.flush)

    @property
    def path(self) -> str:
        return self._session.path

    @property
    def layers(self) -> list[str]:
        return [layer.name for layer in self._plan]

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, store={self.path!r}, layers={len(self._plan)}, step={self._clock.step})"

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ConfigError(f"run.{what}() was called after the watch block ended; call it inside the `with` block.")


def _close_at_exit(ref: "weakref.ref[Run]") -> None:
    run = ref()
    if run is not None:
        run.close(error="closed at interpreter exit: the run was never closed (use `with graddoctor.watch(...)`)")
