"""Lightning: `GradDoctorCallback` records a `Trainer.fit` run into a graddoctor store.

Importing this module imports `lightning` (the `graddoctor[lightning]` extra); `import graddoctor` does not.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
except ImportError:  # pragma: no cover - depends on the environment
    from ..errors import GradDoctorError

    raise GradDoctorError(
        "graddoctor.integrations.lightning needs Lightning 2.x (the `lightning` package): "
        "pip install 'graddoctor[lightning]'."
    ) from None
from typing_extensions import override

from ..config import RunStatus
from ..errors import ConfigError
from ._fw_run import RecordingCallback, scalar_loss

SUPPORTED_STRATEGIES = "a single device (strategy='auto' with devices=1), 'ddp', 'ddp_spawn', 'ddp_notebook'"


class GradDoctorCallback(RecordingCallback, Callback):
    """Record per-layer gradient, activation and weight statistics of the LightningModule while it fits.

    When each statistic is read (one record per optimizer step, steps counted from 0 like
    `trainer.global_step`):

    - parameter gradients (`grad_norm`, `grad_rms`, histograms) in `on_before_optimizer_step`:
      after the last micro-batch's backward, **after AMP unscaling** (Lightning unscales a
      GradScaler's gradients before this hook) and **before gradient clipping**
      (`gradient_clip_val` is applied after it); under DDP, after the all-reduce, so they are
      the averaged gradients every rank steps with;
    - weights and `update_ratio` around the optimizer's update (snapshot in the same hook, the
      difference in the optimizer's step post-hook);
    - activation statistics and dL/d output during every training forward/backward since the
      previous optimizer step: with `accumulate_grad_batches=k`, one record covers the k
      micro-batches; validation and sanity-check passes (no grad, eval mode) are not counted;
    - `loss`: the sum of `training_step`'s losses over the step's micro-batches, as Lightning
      divides each by k (the loss whose gradient the step used).

    Under `strategy="ddp"` every rank watches and only rank 0 writes `store`, through
    `graddoctor.watch`'s torch.distributed support: activation statistics cover every rank's
    samples, gradients are the all-reduced ones.

    Example:
        >>> trainer = L.Trainer(callbacks=[GradDoctorCallback(store="runs.db", every=10)])  # doctest: +SKIP
        >>> trainer.fit(model, loader)                                                   # doctest: +SKIP
        >>> graddoctor.load("runs.db")                                                   # doctest: +SKIP

    Args:
        store: path of the SQLite run store, an open `RunStore`, or ":memory:" (read it back
            through `callback.run.view()`).
        every: record one optimizer step in `every`.
        name: run name (default: a timestamp). A fit resumed from a checkpoint continues the
            run named in the checkpoint, with its step numbering.
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

    Raises:
        ConfigError: an unknown option; at `fit`, a strategy other than single-device or DDP,
            or more than one optimizer.
    """

    # Per-fit state (the settings and `run` live in RecordingCallback, whose __init__ this class uses).
    _resume = False      # load_state_dict() restored a run name: the fit continues that run
    _loss: Any = None    # sum of the losses of the step's micro-batches so far
    _stepped = False     # an optimizer step was taken since the last on_train_batch_end

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _check_strategy(trainer.strategy)
        if len(trainer.optimizers) != 1:
            raise ConfigError(
                f"GradDoctorCallback watches one optimizer; this LightningModule configures {len(trainer.optimizers)}. "
                "Watch it with graddoctor.watch(model, optimizer) in manual optimization instead."
            )
        self._start(pl_module, trainer.optimizers[0], scaler=getattr(trainer.precision_plugin, "scaler", None),
                    resume=self._resume, rank=trainer.global_rank)

    @override
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        # Not the optimizer's pre-hook: Lightning runs forward and backward inside optimizer.step(closure).
        if self.run is not None:
            self.run.read_gradients()
            self._stepped = True

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.run is None:
            return
        loss = scalar_loss(outputs)
        if loss is not None:
            self._loss = loss if self._loss is None else self._loss + loss
        if self._stepped:  # this batch ended an optimizer step: its loss belongs to that step
            if self._loss is not None:
                self.run.log(loss=self._loss)
            self._loss, self._stepped = None, False
            self._step_taken()

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish(status=RunStatus.FAILED, error=f"{type(exception).__name__}: {exception}")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.name = state_dict.get("name") or self.name
        self._resume = self.name is not None


def _check_strategy(strategy: Any) -> None:
    if isinstance(strategy, DeepSpeedStrategy) or not isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)):
        raise ConfigError(
            f"GradDoctorCallback does not support Lightning's {type(strategy).__name__}: sharded parameters and "
            f"gradients would be read per shard. Supported: {SUPPORTED_STRATEGIES}."
        )
