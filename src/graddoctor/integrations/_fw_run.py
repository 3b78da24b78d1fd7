"""What the framework callbacks share: a Run whose gradients are read when the framework says; live TensorBoard.

Imports no framework. The callbacks in `lightning.py` and `hf.py` build on `probes.monitor.Run`, the
object `graddoctor.watch` returns, so every statistic is computed by the same code as in a plain loop.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..config import WatchConfig
from ..errors import ConfigError
from ..probes.monitor import Run
from ..probes.setup import unwrap
from ..store.sqlite import RunStore
from . import distributed

WATCH_OPTIONS = frozenset(f.name for f in dataclasses.fields(WatchConfig)) - {"every"}


class FrameworkRun(Run):
    """A `Run` that reads parameter gradients when `read_gradients()` is called, not in the optimizer's pre-hook.

    Why: a framework that calls `optimizer.step(closure)` (Lightning without a GradScaler) runs
    forward and backward *inside* `step`, after the optimizer's step pre-hooks: there they would
    see the previous step's gradients. The framework's own before-step hook is the right moment.
    The optimizer's post-hook still ends the step (after the update, for `update_ratio`).
    """

    def _on_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if optimizer is None:  # run.step() or read_gradients(); the optimizer's own pre-hook passes itself
            super()._on_pre_step(optimizer, args, kwargs)

    def read_gradients(self) -> None:
        """Read the gradients (and snapshot the weights) of the step in progress, now."""
        self._check_open("read_gradients")
        super()._on_pre_step(None, (), {})


def check_options(every: int, options: dict[str, Any]) -> None:
    """Refuse at construction what `graddoctor.watch` would refuse only when training starts."""
    unknown = set(options) - WATCH_OPTIONS
    if unknown:
        raise ConfigError(f"got unknown watch option(s) {sorted(unknown)}; the options are {sorted(WATCH_OPTIONS)}.")
    WatchConfig(every=every, **options)


def open_run(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    store: str | os.PathLike[str] | RunStore,
    name: str | None,
    every: int,
    scaler: Any = None,
    resume: bool = False,
    options: dict[str, Any],
) -> FrameworkRun:
    """`graddoctor.watch(model, optimizer, ...)`, except that gradients are read by `read_gradients()`."""
    check_options(every, options)
    reducer = distributed.setup(unwrap(model))  # as in watch(): None on one process, else rank 0 writes
    run = FrameworkRun(
        model, optimizer, store=store, name=name, config=WatchConfig(every=every, **options),
        scaler=scaler, resume=resume and name is not None, reducer=reducer,
    )
    return run.attach()


def scalar_loss(outputs: Any) -> torch.Tensor | None:
    """The loss a training step returned (a tensor, or a mapping's "loss"), detached; None otherwise."""
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return loss.detach().reshape(())
    return None


class LiveTensorBoard:
    """A callback's `tensorboard=DIR`: the run mirrored into TensorBoard every `seconds`, from rank 0 only."""

    def __init__(self, run: Run, logdir: str | os.PathLike[str], *, seconds: float, rank: int) -> None:
        from .tensorboard import TensorBoardMirror

        self.seconds = seconds
        self.mirror = TensorBoardMirror(run, logdir) if rank == 0 else None
        self._last = time.monotonic()

    def step_taken(self) -> None:
        """After an optimizer step: update the mirror if `seconds` have passed (it reads the run back)."""
        if self.mirror is not None and time.monotonic() - self._last >= self.seconds:
            self.mirror.update()
            self._last = time.monotonic()

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()
