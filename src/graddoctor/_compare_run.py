"""The runs of `graddoctor.compare`: one variant at one seed (`train_one`), and all of them in worker processes.

`graddoctor.compare` checks the arguments and builds the `Task`s; this module trains them and collects the
metrics. A `Task` and `train_one` are pickled to spawned worker processes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import multiprocessing
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .datasets import Dataset
from .errors import ConfigError

# Training-side remedies: options of the trainer below, never model surgery.
TRAINING_SIDE = ("grad_clip", "lower_lr", "raise_lr", "warmup", "adam", "change_optimizer")
CLIP_NORM = 1.0          # grad_clip: torch.nn.utils.clip_grad_norm_(..., max_norm=1.0)
LR_FACTOR = 0.1          # lower_lr: lr / 10 (raise_lr: lr * 10)
WARMUP_FRACTION = 0.1    # warmup: linear from lr/steps_warmup to lr over the first 10% of steps
BATCH = 64               # minibatch size, sampled with replacement from the training split
_CONVS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "LazyLinear", "LazyConv1d", "LazyConv2d", "LazyConv3d")


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
    if isinstance(factory, str):
        from .modelspec import load_model

        return load_model(factory)
    try:
        model = factory()
    except Exception as err:
        raise ConfigError(f"the model factory raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model factory returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def _apply_model_side(model: nn.Module, ids: tuple[str, ...], data: Dataset, name: str) -> nn.Module:
    model_ids = [r for r in ids if r not in TRAINING_SIDE]
    if not model_ids:
        return model
    try:
        from .remedies.surgery import apply_remedy
    except ImportError:
        raise ConfigError(f"variant {name!r}: model-side remedies ({', '.join(model_ids)}) need "
                          "graddoctor.remedies.surgery, which this install lacks.") from None
    for rid in model_ids:
        try:
            model = apply_remedy(model, rid, data=data.x_train[:256]).model
        except ConfigError as err:
            raise ConfigError(f"variant {name!r}: remedy {rid!r} cannot be applied to this model: {err}") from None
    return model

def _run_all(tasks: list[Task], jobs: int, progress: bool) -> dict[tuple[str, int], dict[str, float]]:
    bar = _Progress(len(tasks), enabled=progress)
    results: dict[tuple[str, int], dict[str, float]] = {}
    if jobs == 1 or len(tasks) == 1:
        for task in tasks:
            results[(task.variant, task.seed)] = train_one(task)
            bar.advance(f"{task.variant}/seed{task.seed}")
        bar.close()
        return results
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                                                initializer=_init_worker) as pool:
        futures = {pool.submit(train_one, task): task for task in tasks}
        try:
            for future in concurrent.futures.as_completed(futures):
                task = futures[future]
                results[(task.variant, task.seed)] = future.result()
                bar.advance(f"{task.variant}/seed{task.seed}")
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            bar.close()
    return results


def _init_worker() -> None:
    # Runs are small and the workers already fill the cores: more threads only contend.
    torch.set_num_threads(1)


class _Progress:
    """A plain text progress bar on stderr: `[#####.....] 7/18 relu/seed1`."""

    def __init__(self, total: int, *, enabled: bool, width: int = 30) -> None:
        self.total, self.done, self.enabled, self.width = total, 0, enabled, width
        self.t0 = time.perf_counter()
        self.advance("", step=0)

    def advance(self, label: str, step: int = 1) -> None:
        self.done += step
        if not self.enabled:
            return
        filled = int(self.width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.t0
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:5.0f}s {label:<28}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def train_one(task: Task) -> dict[str, float]:
    """Train one variant at one seed, watched into `task.store`; return its metrics."""
    from .store.view import load
    from .watch import watch

    torch.manual_seed(task.seed)
    model = _apply_model_side(_build(task.factory), task.remedies, task.data, task.variant)
    opt, schedule = _optimizer(model, task)
    x, y = task.data.x_train, task.data.y_train
    classify = task.data.task == "classification"
    loss_fn = nn.functional.cross_entropy if classify else _mse
    gen = torch.Generator().manual_seed(1000 + task.seed)  # the same batches for every variant
    losses = torch.empty(task.steps)
    config = {"variant": task.variant, "remedies": list(task.remedies), "seed": task.seed, "steps": task.steps,
              "lr": task.lr, "optimizer": task.optimizer}
    model.train()
    t0 = time.perf_counter()
    with watch(model, opt, store=task.store, name=f"{task.variant}/seed{task.seed}", config=config) as run:
        for step in range(task.steps):
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            idx = torch.randint(0, len(x), (min(BATCH, len(x)),), generator=gen)
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            if "grad_clip" in task.remedies:
                nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            opt.step()
            run.log(loss=loss)
            losses[step] = loss.detach()
    seconds = time.perf_counter() - t0
    metrics = _evaluate(model, task.data, loss_fn, classify)
    metrics.update(_flow(load(run)))
    metrics["steps_to_target"] = _steps_to(losses, task.loss_target)
    metrics["sec_per_step"] = seconds / task.steps
    return metrics


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out.reshape(y.shape) if out.numel() == y.numel() else out, y)


def _optimizer(model: nn.Module, task: Task) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
    lr = task.lr * (LR_FACTOR if "lower_lr" in task.remedies else 1 / LR_FACTOR if "raise_lr" in task.remedies else 1.0)
    use_adam = task.optimizer == "adam" or "adam" in task.remedies or "change_optimizer" in task.remedies
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if use_adam else torch.optim.SGD(params, lr=lr)
    warm = max(1, int(WARMUP_FRACTION * task.steps)) if "warmup" in task.remedies else 0
    return opt, (lambda step: lr * min(1.0, (step + 1) / warm) if warm else lr)


def _evaluate(model: nn.Module, data: Dataset, loss_fn: Callable, classify: bool) -> dict[str, float]:
    """Train loss over the whole training split and test loss/accuracy, in eval mode (no dropout, BN running stats)."""
    model.eval()
    with torch.no_grad():
        out_train, out_test = model(data.x_train), model(data.x_test)
        metrics = {"final_loss": float(loss_fn(out_train, data.y_train)),
                   "test_loss": float(loss_fn(out_test, data.y_test))}
        if classify:
            metrics["test_accuracy"] = float((out_test.argmax(-1) == data.y_test).float().mean())
    model.train()
    return metrics


def _flow(run: Any) -> dict[str, float]:
    """First over last weight layer's ||dL/d output|| at the first and last recorded step; dead and saturated fractions."""
    layers = [info.name for info in run.layer_info if info.type in _CONVS]
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
