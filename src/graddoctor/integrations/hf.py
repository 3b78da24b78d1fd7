"""Hugging Face: `GradDoctorCallback`, a `transformers.TrainerCallback` that records a `Trainer.train` run.

Importing this module imports `transformers` (the `graddoctor[hf]` extra); `import graddoctor` does not.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Mapping
from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError:  # pragma: no cover - depends on the environment
    from ..errors import GradDoctorError

    raise GradDoctorError(
        "graddoctor.integrations.hf needs transformers and accelerate: pip install 'graddoctor[hf]'."
    ) from None
import torch

from ..config import RunStatus
from ..errors import ConfigError
from ._fw_run import RecordingCallback, scalar_loss

HF_LOGS = {"grad_norm": "hf/grad_norm"}  # Trainer's own logs worth keeping, under graddoctor's keys


class GradDoctorCallback(RecordingCallback, TrainerCallback):
    """Record per-layer gradient, activation and weight statistics of a `Trainer.train` run.

    When each statistic is read (one record per optimizer step; graddoctor's step k is the
    optimizer step after which `state.global_step` is k + 1):

    - parameter gradients (`grad_norm`, `grad_rms`, histograms) at `optimizer.step()`, right
      after `on_pre_optimizer_step`: the Trainer has already **unscaled** fp16 gradients and
      **clipped** them to `max_grad_norm` (default 1.0) by then, and no callback runs between
      the last backward and the clipping, so these are post-clip gradients. For pre-clip
      per-layer norms train with `max_grad_norm=0` (the Trainer then does not clip); the
      Trainer's own pre-clip total norm is kept as the scalar `hf/grad_norm` at logging steps;
    - under DDP, after the all-reduce (the averaged gradients every rank steps with);
    - weights and `update_ratio` across the optimizer's update; activation statistics and
      dL/d output during every training forward/backward since the previous step: with
      `gradient_accumulation_steps=k`, one record covers the k micro-batches;
    - `loss`: the step's loss from the model's output `loss` of each micro-batch (added up when
      the Trainer passes the step's token count `num_items_in_batch`, averaged otherwise, as the
      Trainer does), never filtered: the Trainer's `logging_nan_inf_filter` hides NaN losses
      from its own logs. Under DDP it is rank 0's loss over its own micro-batches.

    In a distributed run every process watches and only rank 0 writes `store` (`graddoctor.watch`'s
    torch.distributed support: activation statistics over every rank's samples).

    The Trainer calls no callback when `train()` raises, so such a run is marked failed, with the
    uncaught exception, when the process exits (or at the next `train()` with this callback); in a
    notebook that goes on, `callback.run.close(status="failed")` marks it now.

    Example:
        >>> trainer = Trainer(model, args, train_dataset=ds,                             # doctest: +SKIP
        ...                   callbacks=[GradDoctorCallback(store="runs.db", every=10)])
        >>> trainer.train()                                                              # doctest: +SKIP

    Args:
        store: path of the SQLite run store, an open `RunStore`, or ":memory:" (read it back
            through `callback.run.view()`).
        every: record one optimizer step in `every`.
        name: run name (default: a timestamp). Training resumed from a checkpoint continues the
            latest run with this name, with its step numbering.
        tensorboard: a TensorBoard log directory to mirror the run into while it trains (rank 0;
            the same tags as `graddoctor export --format tensorboard`).
        tensorboard_seconds: how often the mirror reads the run back and writes its new steps.
        guard: None (off), "default" or a `graddoctor.probes.guard.Guard`, as in `graddoctor.watch`:
            warn, skip or stop while training (docs/guards.md). A `GuardStop` propagates out of `fit`/`train`.
        mirror: experiment trackers to copy the run into, as `graddoctor.watch(..., mirror=)` takes
            them (an `MlflowMirror`, a `WandbMirror`, a list); rank 0 only, from the store writer's
            thread (docs/trackers.md).
        **options: the other `graddoctor.watch` options (`hist_every`, `update_ratio`,
            `include`, `exclude`, `flush_seconds`).
    """

    # Per-train state (the settings and `run` live in RecordingCallback, whose __init__ this class uses).
    _loss_hook: Any = None            # the forward hook on the model that collects each micro-batch's loss
    _losses: list[torch.Tensor]       # the losses of the step's micro-batches so far (set in on_train_begin)
    _shares = False                   # the model was given the step's token count: its losses add up

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        _check_strategy(args)
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise ConfigError(
                f"GradDoctorCallback needs the Trainer's model and optimizer in on_train_begin, got model={model!r:.60} "
                f"and optimizer={optimizer!r:.60}: pass it to the Trainer (Trainer(..., callbacks=[callback])) rather "
                "than calling its methods yourself."
            )
        self._end_unfinished(" (it raised or was interrupted)")  # a previous train() of this callback
        run = self._start(
            model, getattr(optimizer, "optimizer", optimizer),  # accelerate's AcceleratedOptimizer wraps the torch one
            scaler=getattr(optimizer, "scaler", None), resume=self.name is not None and state.global_step > 0,
            rank=args.process_index,
        )
        self._losses = []
        self._loss_hook = run.model.register_forward_hook(self._on_model_output, with_kwargs=True)
        atexit.register(self._end_unfinished)  # train() raised: no callback runs, but the process exits

    def _on_model_output(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if module.training and torch.is_grad_enabled() and isinstance(output, Mapping):
            loss = scalar_loss(output)
            if loss is not None:
                self._losses.append(loss)
                # Given the step's token count, the model returns its micro-batch's share of the
                # step's loss (they add up); otherwise the micro-batch's mean (they average).
                self._shares = kwargs.get("num_items_in_batch") is not None

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.run is not None and self._losses:
            losses = torch.stack(self._losses).float()
            loss = losses.sum() if self._shares else losses.mean()
            if self._shares and args.average_tokens_across_devices and args.world_size > 1:
                loss = loss * args.world_size  # the token count was every rank's: this rank's mean, as the Trainer scales it
            self.run.log(loss=loss)
        self._losses = []

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._step_taken()

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        logs: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        if self.run is None or not logs:
            return
        kept = {key: float(logs[name]) for name, key in HF_LOGS.items() if isinstance(logs.get(name), (int, float))}
        if kept:
            self.run.log(**kept)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        atexit.unregister(self._end_unfinished)
        self._remove_loss_hook()
        self._finish()

    def _end_unfinished(self, cause: str | None = None) -> None:
        """Mark failed a run that `on_train_end` never closed (a no-op on a closed one).

        The Trainer calls no callback when `train()` raises, so this runs at interpreter exit (where
        `sys.last_value` is the uncaught exception just printed) or at the next `on_train_begin`.
        """
        atexit.unregister(self._end_unfinished)
        self._remove_loss_hook()
        if self.run is None:
            return
        if cause is None:
            last = getattr(sys, "last_value", None)
            cause = f": {type(last).__name__}: {last}" if last is not None else " (it raised or was interrupted)"
        self._finish(status=RunStatus.FAILED, error=f"Trainer.train() did not reach on_train_end{cause}")

    def _remove_loss_hook(self) -> None:
        if self._loss_hook is not None:
            self._loss_hook.remove()
            self._loss_hook = None


def _check_strategy(args: TrainingArguments) -> None:
    """Refuse sharded training: the Trainer's model would hold DeepSpeed ZeRO or FSDP shards, not the weights."""
    for flag in ("deepspeed", "fsdp"):
        if getattr(args, flag, None):
            raise ConfigError(
                f"GradDoctorCallback does not support the Trainer's {flag} training ({flag}={getattr(args, flag)!r}): "
                "its parameters are sharded. Supported: one process (CPU or one GPU) and DDP (torchrun / accelerate "
                "launch without deepspeed or fsdp)."
            )
