"""`graddoctor.compare`: train the original model and remedied variants side by side, over seeds.

Every variant trains on the same data split, seeds, batches and optimizer, watched into one store
(one run per variant and seed, named "relu/seed1"), in parallel processes. Model-side remedies
are applied by `graddoctor.remedies.surgery.apply_remedy`; training-side ones are trainer options.
The runs themselves live in `_run` (Task, train_one, the worker pool), the verdict rule in
`_verdict` (Variant, verdict), the table in `_text`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import sys
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ._run import (
    BATCH, CLIP_NORM, LR_FACTOR, TRAINING_SIDE, WARMUP_FRACTION, Task, _apply_model_side, _build, _run_all, train_one,
)
from ._verdict import MIN_EFFECT, SPREADS, Variant, verdict, verdict_rule
from ...data import Dataset, as_dataset
from ...errors import ConfigError
from ...train.pool import check_backend, cores
from ..catalog import get_remedy
from ...store.sqlite import MEMORY, RunStore
from ..._validate import MAX_JOBS, MAX_SEEDS, MAX_STEPS, check_bool, check_int, check_number, check_path, check_strings

__all__ = [
    "compare", "Comparison", "Variant", "Task", "verdict", "verdict_rule", "train_one", "TRAINING_SIDE", "CLIP_NORM",
    "LR_FACTOR", "WARMUP_FRACTION", "BATCH", "MIN_EFFECT", "SPREADS",
]

_METRICS = ("test_accuracy", "test_loss", "final_loss", "steps_to_target", "grad_ratio_init", "grad_ratio_end",
            "dead_frac", "saturated_frac", "sec_per_step")


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
        from ._text import render

        return render(self)


def compare(
    model_factory: str | Callable[[], nn.Module],
    data: Any,
    *,
    remedies: Sequence[str] = (),
    steps: int = 300,
    seeds: int = 3,
    jobs: int | None = None,
    store: str | os.PathLike[str] | None = None,
    lr: float = 1e-3,
    optimizer: str = "adam",
    progress: bool | None = None,
    backend: str = "process",
    ray_address: str | None = None,
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
            x_test, y_test) or a `graddoctor.data.Dataset`. Integer targets: classification
            (cross-entropy, accuracy); float targets: regression (mean squared error).
        remedies: remedy ids from the catalog, e.g. ["he_init", "leaky_relu", "batch_norm"].
        steps: optimizer steps per run (batches of 64).
        seeds: runs per variant (seeds 0 .. seeds-1).
        jobs: worker processes (default: the cores this process may use); 1 trains in this process.
        store: SQLite run store for every run (default: in memory, discarded).
        lr: learning rate of every variant (before `lower_lr`/`warmup`).
        optimizer: "adam" or "sgd".
        progress: print a progress bar on stderr (default: when stderr is a terminal).
        backend: "process" (worker processes here) or "ray" (one Ray task per run: the [ray] extra;
            same seeds, same numbers). With a `store` file, each Ray task trains into a shard of its
            own that is copied into `store` (docs/trackers.md).
        ray_address: with backend="ray", the cluster ("auto", "ray://head:10001"); None starts a
            local Ray instance for the call.

    Returns:
        A `Comparison`: print it for the table and verdicts, `.to_json()` for the JSON.

    Raises:
        ConfigError: bad arguments, an unknown remedy, a remedy the model cannot take (the
            surgery's refusal, checked once before any training), a factory that fails.
    """
    _check_arguments(model_factory, remedies, steps, seeds, jobs, lr, optimizer)
    check_backend(backend, ray_address)
    check_path("store", store, optional=True)
    if progress is not None:
        check_bool("progress", progress)
    dataset = as_dataset(data)
    variants = [("original", ())] + [(r, _parse_remedy(r, optimizer)) for r in _as_list(remedies)]
    dataset = _preflight(model_factory, dataset, variants)
    target = _loss_target(dataset)
    store_path = MEMORY if store is None else os.fspath(store)
    if store_path != MEMORY:
        RunStore(store_path).close()  # create the schema once, before the workers race to
    tasks = [Task(name, ids, seed, model_factory, dataset, steps, float(lr), optimizer, target, store_path)
             for name, ids in variants for seed in range(seeds)]
    jobs = jobs or cores()
    if (jobs > 1 or backend == "ray") and not isinstance(model_factory, str):
        _check_picklable(model_factory)
    t0 = time.perf_counter()
    results = _run_all(tasks, jobs, sys.stderr.isatty() if progress is None else progress, backend, ray_address)
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


def _check_arguments(model_factory: Any, remedies: Sequence[str], steps: Any, seeds: Any, jobs: Any, lr: Any,
                     optimizer: str) -> None:
    check_int("steps", steps, minimum=2, maximum=MAX_STEPS)
    check_int("seeds", seeds, minimum=1, maximum=MAX_SEEDS)
    check_int("jobs", jobs, minimum=1, maximum=MAX_JOBS, optional=True)
    if not isinstance(optimizer, str) or optimizer not in ("adam", "sgd"):
        raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}.")
    check_number("lr", lr, positive=True)
    if not isinstance(remedies, str):
        check_strings("remedies", remedies)
    if not (isinstance(model_factory, str) or callable(model_factory)):
        raise ConfigError(f"model_factory must be a MODEL spec string or a callable, got {type(model_factory).__name__}.")
    if not _as_list(remedies):
        raise ConfigError("give at least one remedy to compare with the original, e.g. remedies=['he_init', 'relu'].")


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


def _preflight(factory: Any, data: Dataset, variants: list[tuple[str, tuple[str, ...]]]) -> Dataset:
    """Build the model once and apply each model-side remedy once, so that a refusal stops us early.

    Returns the data as the model takes it: flat inputs, or (when only those fit) the dataset's
    images, e.g. digits as 1x8x8 for a conv net or a ViT.
    """
    torch.manual_seed(0)
    model = _build(factory)
    data = _shaped_for(model, data)
    for name, ids in variants:
        if any(r not in TRAINING_SIDE for r in ids):
            torch.manual_seed(0)
            _apply_model_side(_build(factory), ids, data, name)
    return data


def _shaped_for(model: nn.Module, data: Dataset) -> Dataset:
    """`data` if the model takes its inputs; else the inputs reshaped to `data.image_shape` if the model takes those."""
    errors = []
    for shaped in (data, _as_images(data)):
        if shaped is None:
            continue
        with torch.no_grad():
            try:
                model(shaped.x_train[:2])
                return shaped
            except Exception as err:
                errors.append(f"of shape {tuple(shaped.x_train.shape[1:])}: {type(err).__name__}: {err}")
    raise ConfigError("the model cannot take the data's inputs " + "; nor ".join(errors))


def _as_images(data: Dataset) -> Dataset | None:
    shape = data.image_shape
    if shape is None or data.x_train.dim() != 2 or math.prod(shape) != data.x_train.shape[1]:
        return None
    return dataclasses.replace(data, x_train=data.x_train.reshape(-1, *shape), x_test=data.x_test.reshape(-1, *shape))


def _check_picklable(factory: Callable[[], nn.Module]) -> None:
    try:
        pickle.dumps(factory)
    except Exception as err:
        raise ConfigError(
            f"the model factory {getattr(factory, '__qualname__', factory)!r} cannot be sent to worker processes "
            f"({type(err).__name__}: {err}): pass a module-level function or a MODEL spec string "
            "('path/to/file.py:factory'), or jobs=1."
        ) from None


def _loss_target(data: Dataset) -> float:
    """The loss a run must reach for `steps_to_target`: half the loss of a constant guess.

    Classification: 0.5 * ln(classes) (half of chance level's cross-entropy); regression: half the
    targets' variance (half of the mean squared error of predicting their mean).
    """
    if data.task == "classification":
        return 0.5 * math.log(max(data.n_classes, 2))
    return 0.5 * float(data.y_train.float().var())
