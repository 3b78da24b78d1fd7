"""`graddoctor.compare`: train the original model and remedied variants side by side, over seeds.

Every variant trains on the same data split, seeds, batches and optimizer, watched into one store
(one run per variant and seed, named "relu/seed1"), in parallel processes. Model-side remedies
are applied by `graddoctor.remedies.surgery.apply_remedy`; training-side ones are trainer options.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import pickle
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .datasets import Dataset, as_dataset
from .errors import ConfigError
from .remedies.catalog import get_remedy
from .store.sqlite import MEMORY, RunStore

# Training-side remedies: options of the trainer below, never model surgery.
TRAINING_SIDE = ("grad_clip", "lower_lr", "raise_lr", "warmup", "adam", "change_optimizer")
CLIP_NORM = 1.0          # grad_clip: torch.nn.utils.clip_grad_norm_(..., max_norm=1.0)
LR_FACTOR = 0.1          # lower_lr: lr / 10 (raise_lr: lr * 10)
WARMUP_FRACTION = 0.1    # warmup: linear from lr/steps_warmup to lr over the first 10% of steps
BATCH = 64               # minibatch size, sampled with replacement from the training split
MIN_EFFECT = 0.02        # verdict: the smallest change that counts (accuracy points, or 2% of the loss)
SPREADS = 2.0            # verdict: ... and more than this many pooled standard deviations
_CONVS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "LazyLinear", "LazyConv1d", "LazyConv2d", "LazyConv3d")
_METRICS = ("test_accuracy", "test_loss", "final_loss", "steps_to_target", "grad_ratio_init", "grad_ratio_end",
            "dead_frac", "saturated_frac", "sec_per_step")


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


@dataclasses.dataclass(frozen=True)
class Variant:
    """One variant's results: per-seed metrics, their mean and std, and its verdict against the original."""

    name: str
    remedies: tuple[str, ...]
    per_seed: tuple[dict[str, float], ...]
    verdict: str | None = None

    def metric(self, key: str) -> dict[str, float]:
        """{mean, std, n} over the seeds where `key` is finite (std with ddof=1; 0 for one seed)."""
        values = np.array([s.get(key, math.nan) for s in self.per_seed], dtype=float)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            return {"mean": math.nan, "std": math.nan, "n": 0}
        std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
        return {"mean": float(finite.mean()), "std": std, "n": int(len(finite))}


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What `compare` measured: the original first, then one `Variant` per remedy. Print it for the table."""

    task: str
    dataset: str
    steps: int
    seeds: int
    optimizer: str
    lr: float
    loss_target: float
    store: str
    variants: tuple[Variant, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        keys = [k for k in _METRICS if not (k == "test_accuracy" and self.task != "classification")]
        variants = []
        for v in self.variants:
            entry: dict[str, Any] = {"name": v.name, "remedies": list(v.remedies),
                                     "metrics": {k: _json_stat(v.metric(k)) for k in keys}}
            if v.verdict is not None:
                entry["verdict"] = v.verdict
            variants.append(entry)
        return {"task": self.task, "dataset": self.dataset, "steps": self.steps, "seeds": self.seeds,
                "optimizer": self.optimizer, "lr": self.lr, "loss_target": self.loss_target,
                "store": None if self.store == MEMORY else self.store, "seconds": round(self.seconds, 2), "verdict_rule": verdict_rule(self.task),
                "variants": variants}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        from ._compare_text import render

        return render(self)


def compare(
    model_factory: str | Callable[[], nn.Module],
    data: Any,
    remedies: Sequence[str] = (),
    steps: int = 300,
    seeds: int = 3,
    jobs: int | None = None,
    store: str | os.PathLike[str] | None = None,
    lr: float = 1e-3,
    optimizer: str = "adam",
    *,
    progress: bool | None = None,
) -> Comparison:
    """Train the original model and each remedied variant over `seeds` seeds, and compare them.

    Example:
        >>> c = graddoctor.compare("examples/deep_sigmoid.py:build", "digits",
        ...                        remedies=["relu", "batch_norm"], steps=300, seeds=3)  # doctest: +SKIP
        >>> print(c)                                                                    # doctest: +SKIP

    Every run of seed k uses `torch.manual_seed(k)` before `model_factory()` and the same batch
    order; model-side remedies are applied to that fresh model, training-side ones change the
    trainer: `grad_clip` clips the global gradient norm to 1.0, `lower_lr` divides lr by 10 (`raise_lr` multiplies it by 10),
    `warmup` raises lr linearly over the first 10% of steps, `adam` trains with Adam instead of
    SGD (so it needs optimizer="sgd"). A remedy may combine ids with "+" ("he_init+relu").

    Verdict rule (test accuracy for classification, test loss for regression): a remedy `helps`
    when its mean over seeds beats the original's by more than 2 pooled standard deviations,
    sqrt((s_orig^2 + s_remedy^2) / 2), and by at least 0.02 (accuracy) or 2% of the original's
    mean loss; it `hurts` by the same rule in the other direction (or when it diverges while the
    original does not); otherwise `no_change`.

    Args:
        model_factory: a MODEL spec, "path/to/file.py:factory" or "package.module:factory", or a
            picklable callable (a module-level function) returning a fresh `nn.Module`.
        data: "digits", "mnist1d", an .npz path (arrays x, y), (x, y), (x_train, y_train,
            x_test, y_test) or a `graddoctor.datasets.Dataset`. Integer targets: classification
            (cross-entropy, accuracy); float targets: regression (mean squared error).
        remedies: remedy ids from the catalog, e.g. ["he_init", "leaky_relu", "batch_norm"].
        steps: optimizer steps per run (batches of 64).
        seeds: runs per variant (seeds 0 .. seeds-1).
        jobs: worker processes (default: os.cpu_count()); 1 trains in this process.
        store: SQLite run store for every run (default: in memory, discarded).
        lr: learning rate of every variant (before `lower_lr`/`warmup`).
        optimizer: "adam" or "sgd".
        progress: print a progress bar on stderr (default: when stderr is a terminal).

    Returns:
        A `Comparison`: print it for the table and verdicts, `.to_json()` for the JSON.

    Raises:
        ConfigError: bad arguments, an unknown remedy, a remedy the model cannot take (the
            surgery's refusal, checked once before any training), a factory that fails.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ConfigError(f"steps must be an integer >= 2, got {steps!r}.")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds must be an integer >= 1, got {seeds!r}.")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"jobs must be a positive integer, got {jobs!r}.")
    if optimizer not in ("adam", "sgd"):
        raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}.")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"lr must be a positive number, got {lr!r}.")
    if not (isinstance(model_factory, str) or callable(model_factory)):
        raise ConfigError(f"model_factory must be a MODEL spec string or a callable, got {type(model_factory).__name__}.")
    if not _as_list(remedies):
        raise ConfigError("give at least one remedy to compare with the original, e.g. remedies=['he_init', 'relu'].")
    dataset = as_dataset(data)
    variants = [("original", ())] + [(r, _parse_remedy(r, optimizer)) for r in _as_list(remedies)]
    _preflight(model_factory, dataset, variants)
    target = _loss_target(dataset)
    store_path = MEMORY if store is None else os.fspath(store)
    if store_path != MEMORY:
        RunStore(store_path).close()  # create the schema once, before the workers race to
    tasks = [Task(name, ids, seed, model_factory, dataset, steps, float(lr), optimizer, target, store_path)
             for name, ids in variants for seed in range(seeds)]
    jobs = jobs or os.cpu_count() or 1
    if jobs > 1 and not isinstance(model_factory, str):
        _check_picklable(model_factory)
    t0 = time.perf_counter()
    results = _run_all(tasks, jobs, sys.stderr.isatty() if progress is None else progress)
    per_variant = {name: tuple(results[(name, s)] for s in range(seeds)) for name, _ in variants}
    original = Variant("original", (), per_variant["original"])
    key = "test_accuracy" if dataset.task == "classification" else "test_loss"
    out = [original] + [
        Variant(name, ids, per_variant[name],
                verdict(original.metric(key), Variant(name, ids, per_variant[name]).metric(key),
                        higher_is_better=key == "test_accuracy"))
        for name, ids in variants[1:]
    ]
    return Comparison(dataset.task, dataset.describe(), steps, seeds, optimizer, float(lr), target,
                      store_path, tuple(out), time.perf_counter() - t0)


def verdict(original: dict[str, float], remedied: dict[str, float], *, higher_is_better: bool = True) -> str:
    """`helps`, `hurts` or `no_change` from two {mean, std} summaries (see `compare` for the rule).

    Example:
        >>> verdict({"mean": 0.10, "std": 0.01}, {"mean": 0.90, "std": 0.02})
        'helps'
    """
    a, b = original["mean"], remedied["mean"]
    if not math.isfinite(b):
        return "no_change" if not math.isfinite(a) else "hurts"
    if not math.isfinite(a):
        return "helps"
    gain = (b - a) if higher_is_better else (a - b)
    pooled = math.sqrt((_finite(original["std"]) ** 2 + _finite(remedied["std"]) ** 2) / 2)
    floor = MIN_EFFECT if higher_is_better else MIN_EFFECT * abs(a)
    threshold = max(SPREADS * pooled, floor)
    if gain > threshold:
        return "helps"
    if -gain > threshold:
        return "hurts"
    return "no_change"


def verdict_rule(task: str) -> str:
    """The verdict rule in words, as printed under the table and stored in the JSON."""
    if task == "classification":
        return ("helps: mean test accuracy above the original's by more than 2 pooled std over seeds and by at least "
                "0.02; hurts: below by the same margin (or non-finite); else no_change")
    return ("helps: mean test loss below the original's by more than 2 pooled std over seeds and by at least 2% of "
            "it; hurts: above by the same margin (or non-finite); else no_change")


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _json_stat(s: dict[str, float]) -> dict[str, Any]:
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.items()}
    return clean


def _as_list(remedies: Sequence[str] | str) -> list[str]:
    items = remedies.split(",") if isinstance(remedies, str) else list(remedies)
    items = [r.strip() for r in items if r and r.strip()]
    duplicates = sorted({r for r in items if items.count(r) > 1})
    if duplicates:
        raise ConfigError(f"remedy {duplicates[0]!r} is listed twice; list each variant once.")
    if "original" in items:
        raise ConfigError("'original' is always trained; it is not a remedy id.")
    return items


def _parse_remedy(variant: str, optimizer: str) -> tuple[str, ...]:
    """'he_init+relu' -> ('he_init', 'relu'), each checked against the catalog."""
    ids = tuple(part.strip() for part in variant.split("+") if part.strip())
    for rid in ids:
        try:
            get_remedy(rid)
        except KeyError as err:
            raise ConfigError(err.args[0]) from None
        if rid in ("adam", "change_optimizer") and optimizer == "adam":
            raise ConfigError(f"remedy {rid!r} trains with Adam instead of SGD, but the optimizer is already adam: "
                              "pass optimizer='sgd' (CLI: --optimizer sgd) to try it.")
    return ids


def _preflight(factory: Any, data: Dataset, variants: list[tuple[str, tuple[str, ...]]]) -> None:
    """Build the model once and apply each model-side remedy once, so that a refusal stops us early."""
    torch.manual_seed(0)
    model = _build(factory)
    with torch.no_grad():
        try:
            model(data.x_train[:2])
        except Exception as err:
            raise ConfigError(f"the model cannot take the data's inputs of shape {tuple(data.x_train.shape[1:])}: "
                              f"{type(err).__name__}: {err}") from None
    for name, ids in variants:
        if any(r not in TRAINING_SIDE for r in ids):
            torch.manual_seed(0)
            _apply_model_side(_build(factory), ids, data, name)


def _check_picklable(factory: Callable[[], nn.Module]) -> None:
    try:
        pickle.dumps(factory)
    except Exception as err:
        raise ConfigError(
            f"the model factory {getattr(factory, '__qualname__', factory)!r} cannot be sent to worker processes "
            f"({type(err).__name__}: {err}): pass a module-level function or a MODEL spec string "
            "('path/to/file.py:factory'), or jobs=1."
        ) from None


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


def _loss_target(data: Dataset) -> float:
    """The loss a run must reach for `steps_to_target`: half the loss of a constant guess.

    Classification: 0.5 * ln(classes) (half of chance level's cross-entropy); regression: half the
    targets' variance (half of the mean squared error of predicting their mean).
    """
    if data.task == "classification":
        return 0.5 * math.log(max(data.n_classes, 2))
    return 0.5 * float(data.y_train.float().var())


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
