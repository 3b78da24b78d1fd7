"""The runs of `graddoctor.compare`: one variant at one seed (`train_one`), and all of them in worker processes.

`graddoctor.compare` checks the arguments and builds the `Task`s; this module trains them and collects the
metrics. A `Task` and `train_one` are pickled to spawned worker processes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data import Dataset
from ...diagnosis.families import depth_layers
from ...errors import ConfigError
from ...train.spec import TrainSpec
from ...train.trainer import evaluate as _evaluate, fit
from ...store.sqlite import MEMORY
from ...train.pool import parallel_map
from ...train.shard import in_shard, merge_shard

# Training-side remedies: options of the trainer below, never model surgery.
TRAINING_SIDE = ("grad_clip", "lower_lr", "raise_lr", "warmup", "adam", "change_optimizer")
CLIP_NORM = 1.0          # grad_clip: torch.nn.utils.clip_grad_norm_(..., max_norm=1.0)
LR_FACTOR = 0.1          # lower_lr: lr / 10 (raise_lr: lr * 10)
WARMUP_FRACTION = 0.1    # warmup: linear from lr/steps_warmup to lr over the first 10% of steps
BATCH = 64               # minibatch size, sampled with replacement from the training split


@dataclasses.dataclass(frozen=True)
class Task:
    """One training run: a variant of the model at one seed. Picklable, for the worker processes."""

    variant: str
    remedies: tuple[str, ...]
    seed: int
    factory: Any                # a MODEL spec string or a picklable callable returning an nn.Module
    data: Dataset
    steps: int
    lr: float
    optimizer: str
    loss_target: float
    store: str


def _build(factory: Any) -> nn.Module:
    from ...train.factory import call_factory, load_model

    return load_model(factory) if isinstance(factory, str) else call_factory(factory)


def _apply_model_side(model: nn.Module, ids: tuple[str, ...], data: Dataset, name: str) -> nn.Module:
    model_ids = [r for r in ids if r not in TRAINING_SIDE]
    if not model_ids:
        return model
    try:
        from ..surgery import apply_remedy
    except ImportError:
        raise ConfigError(f"variant {name!r}: model-side remedies ({', '.join(model_ids)}) need "
                          "graddoctor.remedies.surgery, which this install lacks.") from None
    for rid in model_ids:
        try:
            model = apply_remedy(model, rid, data=data.x_train[:256]).model
        except ConfigError as err:
            raise ConfigError(f"variant {name!r}: remedy {rid!r} cannot be applied to this model: {err}") from None
    return model

def _run_all(tasks: list[Task], jobs: int, progress: bool, backend: str = "process",
             ray_address: str | None = None) -> dict[tuple[str, int], dict[str, float]]:
    """Train every task (in `jobs` worker processes, or Ray tasks: graddoctor.train.pool) and key the
    metrics by (variant, seed). On Ray with a store file, each task trains into a shard of its own
    that is copied into the store here (train/shard.py)."""
    label = lambda t: f"{t.variant}/seed{t.seed}"  # noqa: E731
    if backend == "ray" and tasks and tasks[0].store != MEMORY:
        out = {}
        for task, (metrics, shard) in parallel_map(_train_one_shard, tasks, jobs=jobs, progress=progress, label=label,
                                                   backend=backend, ray_address=ray_address):
            merge_shard(shard, task.store)
            out[(task.variant, task.seed)] = metrics
        return out
    done = parallel_map(train_one, tasks, jobs=jobs, progress=progress, label=label, backend=backend,
                        ray_address=ray_address)
    return {(task.variant, task.seed): metrics for task, metrics in done}


def _train_one_shard(task: Task) -> tuple[dict[str, float], bytes]:
    return in_shard(lambda path: train_one(dataclasses.replace(task, store=path)))


def train_one(task: Task) -> dict[str, float]:
    """Train one variant at one seed, watched into `task.store` (graddoctor.train.trainer.fit); return its metrics."""
    from ...store.view import load

    torch.manual_seed(task.seed)
    model = _apply_model_side(_build(task.factory), task.remedies, task.data, task.variant)
    config = {"variant": task.variant, "remedies": list(task.remedies), "seed": task.seed, "steps": task.steps,
              "lr": task.lr, "optimizer": task.optimizer}
    # the same batches for every variant: seeded by the seed alone
    losses, seconds, run = fit(model, task.data, _train_spec(task), batch_seed=1000 + task.seed, store=task.store,
                               name=f"{task.variant}/seed{task.seed}", config=config)
    metrics = _evaluate(model, task.data)
    metrics.update(_flow(load(run)))
    metrics["steps_to_target"] = _steps_to(losses, task.loss_target)
    metrics["sec_per_step"] = seconds / task.steps
    return metrics


def _train_spec(task: Task) -> TrainSpec:
    """The trainer's settings for a task: training-side remedies become options (plain SGD, no momentum)."""
    lr = task.lr * (LR_FACTOR if "lower_lr" in task.remedies else 1 / LR_FACTOR if "raise_lr" in task.remedies else 1.0)
    use_adam = task.optimizer == "adam" or "adam" in task.remedies or "change_optimizer" in task.remedies
    warm = max(1, int(WARMUP_FRACTION * task.steps)) if "warmup" in task.remedies else 0
    return TrainSpec(optimizer="adam" if use_adam else "sgd", lr=lr, momentum=0.0, batch=BATCH, steps=task.steps,
                     clip=CLIP_NORM if "grad_clip" in task.remedies else None, warmup=warm, hist_every=None)


def _flow(run: Any) -> dict[str, float]:
    """First over last weight layer's ||dL/d output|| at the first and last recorded step; dead and saturated fractions."""
    layers = [run.layer_info[i].name for i in depth_layers(run)]  # the layers diagnose's ratio reads
    out: dict[str, float] = {"grad_ratio_init": math.nan, "grad_ratio_end": math.nan}
    if len(layers) >= 2 and len(run.steps):
        first, last = run.stat("out_grad_norm", layers[0]), run.stat("out_grad_norm", layers[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            out["grad_ratio_init"] = float(first[0] / last[0])
            out["grad_ratio_end"] = float(first[-1] / last[-1])
    for stat in ("dead_frac", "saturated_frac"):
        matrix = run.stat_matrix(stat) if stat in run.stats else np.empty((0, 0))
        values = np.array([row[np.isfinite(row)][-1] for row in matrix if np.isfinite(row).any()])  # last recorded
        out[stat] = float(values.mean()) if len(values) else math.nan
    return out


def _steps_to(losses: torch.Tensor, target: float) -> float:
    """First step at which the mean loss over the last 10 steps is at or below `target` (NaN: never)."""
    window = min(10, len(losses))
    smooth = torch.nn.functional.avg_pool1d(losses.view(1, 1, -1), window, stride=1).view(-1)
    hit = torch.nonzero(smooth <= target)
    return float(hit[0, 0] + window - 1) if len(hit) else math.nan
