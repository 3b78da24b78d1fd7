"""The seeded trainer: one `RunSpec` trained and watched into a store (`train_run`), on the loop `fit` shares with `compare`.

Determinism: `torch.manual_seed(seed)` before the model is built, minibatches drawn with
replacement from a generator seeded by the run (never the global RNG), and one torch thread while
training (a different thread count may change float sums). The same seed gives the same numbers
in this process or in a worker, and the caller's global torch RNG is restored after each run.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..data import Dataset, load_dataset
from .spec import RunSpec, TrainSpec
from .tasks import is_task, load_task


def fit(model: nn.Module, data: Dataset, train: TrainSpec, *, batch_seed: int, store: Any, name: str,
        config: dict[str, Any]) -> tuple[torch.Tensor, float, Any]:
    """Train `model` on `data` as `train` says, watched into `store` as run `name`.

    Returns (losses per step, seconds, the finished `Run`: `graddoctor.load(run)` reads it back).

    The loss is the minibatch's mean cross-entropy (integer targets; over every position when the
    targets are sequences) or mean squared error (float targets); `train.z_loss` adds that
    coefficient times mean (log Z)^2 of the outputs to what is back-propagated (the logged loss
    stays the cross-entropy); clipping (if any) happens after backward and before the step, so the recorded
    `grad_norm` is the clipped gradient's and `grad_norm_pre_clip` the one before clipping (watch reads
    the optimizer's step pre-hook, and each gradient when it is complete).
    """
    from ..probes._watch import watch

    opt = _optimizer(model, train)
    loss_fn = loss_function(data)
    gen = torch.Generator().manual_seed(batch_seed)
    x, y = data.x_train, data.y_train
    losses = torch.full((train.steps,), math.nan)
    model.train()
    t0 = time.perf_counter()
    options = {} if train.hist_every is None else {"hist_every": train.hist_every}
    options |= {} if train.attention_every is None else {"attention_every": train.attention_every}
    # full_every=every: a study or a comparison reads full-tier statistics (dead_frac, act_*, update_ratio)
    # at whichever recorded step it measures, the last one included, so every recorded step is full tier.
    with watch(model, opt, store=store, name=name, user_config=config, every=train.every, full_every=train.every,
               **options) as run:
        for step in range(train.steps):
            for group in opt.param_groups:
                group["lr"] = train.lr * min(1.0, (step + 1) / train.warmup) if train.warmup else train.lr
            idx = torch.randint(0, len(x), (min(train.batch, len(x)),), generator=gen)
            out = model(x[idx])
            loss = loss_fn(out, y[idx])
            opt.zero_grad()
            (loss + train.z_loss * z_loss(out) if train.z_loss else loss).backward()
            if train.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), train.clip)
            opt.step()
            run.log(loss=loss)
            losses[step] = loss.detach()
    return losses, time.perf_counter() - t0, run


def _optimizer(model: nn.Module, train: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=train.lr)
    return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum)


def loss_function(data: Dataset) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return _cross_entropy if data.task == "classification" else _mse


def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; targets [n, T] (a language model's next tokens) against logits [n, T, classes]."""
    if y.dim() > 1:
        return nn.functional.cross_entropy(out.flatten(0, -2), y.flatten())
    return nn.functional.cross_entropy(out, y)


def z_loss(out: torch.Tensor) -> torch.Tensor:
    """mean over rows of (log Z)^2, log Z = logsumexp over the last dim (Chowdhery et al. 2022, Wortsman et al. 2023)."""
    return torch.logsumexp(out.float(), dim=-1).pow(2).mean()


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out.reshape(y.shape) if out.numel() == y.numel() else out, y)


def evaluate(model: nn.Module, data: Dataset) -> dict[str, float]:
    """Train loss over the whole training split and test loss/accuracy, in eval mode (no dropout, BN running stats)."""
    loss_fn = loss_function(data)
    model.eval()
    with torch.no_grad():
        out_train, out_test = model(data.x_train), model(data.x_test)
        metrics = {"final_loss": float(loss_fn(out_train, data.y_train)),
                   "test_loss": float(loss_fn(out_test, data.y_test))}
        if data.task == "classification":  # per position for sequence targets
            metrics["test_accuracy"] = float((out_test.argmax(-1) == data.y_test).float().mean())
    model.train()
    return metrics


@functools.lru_cache(maxsize=4)
def dataset(name: str) -> Dataset:
    """`graddoctor.data.load_dataset`, once per process (MNIST-1D takes seconds to generate)."""
    return load_task(name) if is_task(name) else load_dataset(name)


def train_run(spec: RunSpec, store: str) -> dict[str, Any]:
    """Train one run of a sweep into `store` (run name = spec.name); return its metrics (JSON-able).

    Metrics: final_loss, test_loss, test_accuracy (classification), losses (per step; None where
    not finite), diverged (a non-finite loss was seen), seconds.
    """
    from .models import build

    data = dataset(spec.data)
    n_out = data.n_classes if data.task == "classification" else 1
    with _one_thread(), torch.random.fork_rng(devices=[]):  # the caller's torch RNG stream is left as it was
        torch.manual_seed(spec.seed)
        model = (spec.net.build(data) if hasattr(spec.net, "build")  # a SeqNetSpec (graddoctor.train.sequence)
                 else build(spec.net, tuple(data.x_train.shape[1:]), n_out, data.image_shape))
        losses, seconds, _ = fit(model, data, spec.train, batch_seed=1000 + spec.seed, store=store, name=spec.name,
                              config={"lab": spec.to_dict()})
        metrics: dict[str, Any] = evaluate(model, data)
    finite = torch.isfinite(losses)
    metrics = {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}
    metrics["losses"] = [float(v) if ok else None for v, ok in zip(losses.tolist(), finite.tolist())]
    metrics["diverged"] = not bool(finite.all())
    metrics["seconds"] = round(seconds, 3)
    return metrics


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
