"""What the framework callbacks share: their settings, the `graddoctor.watch` run they open, live TensorBoard.

Imports no framework. The callbacks in `lightning.py` and `hf.py` record through `graddoctor.watch`
(the same `Run` as a plain loop, torch.distributed included), so every statistic is computed by
the same code; they only decide when a step's gradients are read and what the loss was.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..config import RunStatus, WatchConfig
from ..errors import ConfigError
from ..probes.guard.policy import resolve_guard
from ..probes.monitor import Run
from ..probes.session import mirror_feeds
from ..store.sqlite import MEMORY, RunStore
from ..probes._watch import watch

WATCH_OPTIONS = frozenset(f.name for f in dataclasses.fields(WatchConfig)) - {"every"}


class RecordingCallback:
    """The part both `GradDoctorCallback`s share (a mixin listed before the framework's callback class).

    It keeps the settings given at construction, opens the run with `graddoctor.watch` when
    training starts (`_start`), mirrors it into TensorBoard on rank 0 when asked, and closes both
    (`_finish`). The arguments are documented on each callback.
    """

    def __init__(
        self, store: str | os.PathLike[str] | RunStore = MEMORY, *, every: int = 1, name: str | None = None,
        tensorboard: str | os.PathLike[str] | None = None, tensorboard_seconds: float = 30.0, guard: Any = None,
        mirror: Any = None,
        **options: Any,
    ) -> None:
        check_options(every, options)
        resolve_guard(guard)  # a bad guard= is refused here, at construction, not when training starts
        mirror_feeds(mirror)  # so is a bad mirror= (it starts no tracker)
        self.store, self.every, self.name, self.options, self.guard = store, every, name, options, guard
        self.mirror = mirror
        self.tensorboard, self.tensorboard_seconds = tensorboard, tensorboard_seconds
        self.run: Run | None = None
        self._live: LiveTensorBoard | None = None

    def _start(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, scaler: Any, resume: bool, rank: int) -> Run:
        """`graddoctor.watch(model, optimizer, ...)` with the callback's settings, and the live mirror if asked."""
        self.run = watch(model, optimizer, store=self.store, name=self.name, every=self.every, scaler=scaler,
                         resume=resume, guard=self.guard, mirror=self.mirror, **self.options)
        self.name = self.run.name
        if self.tensorboard is not None:
            self._live = LiveTensorBoard(self.run, self.tensorboard, seconds=self.tensorboard_seconds, rank=rank)
        return self.run

    def _step_taken(self) -> None:
        if self._live is not None:
            self._live.step_taken()

    def _finish(self, status: RunStatus = RunStatus.FINISHED, error: str | None = None) -> None:
        """Close the run (idempotent), then the mirror, which writes the run's last steps."""
        try:
            if self.run is not None:
                self.run.close(status=status, error=error)
        finally:
            if self._live is not None:
                self._live.close()
                self._live = None


def check_options(every: int, options: dict[str, Any]) -> None:
    """Refuse at construction what `graddoctor.watch` would refuse only when training starts."""
    unknown = set(options) - WATCH_OPTIONS
    if unknown:
        raise ConfigError(f"got unknown watch option(s) {sorted(unknown)}; the options are {sorted(WATCH_OPTIONS)}.")
    WatchConfig(every=every, **options)


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
