"""`graddoctor.watch`: the public entry point of instrumentation."""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from ..config import WatchConfig
from ..errors import ConfigError
from . import distributed
from .monitor import Run
from .session import mirror_feeds
from .setup import unwrap
from ..store.sqlite import MEMORY, RunStore
from .._validate import check_watch

_DEFAULTS = WatchConfig()


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    store: str | os.PathLike[str] | RunStore = MEMORY,
    name: str | None = None,
    every: int = _DEFAULTS.every,
    full_every: int | None = None,
    full_first: int = _DEFAULTS.full_first,
    budget: float | None = None,
    hist_every: int | None = None,
    update_ratio: str | bool = _DEFAULTS.update_ratio,
    include: str | Sequence[str] = _DEFAULTS.include,
    exclude: str | Sequence[str] = _DEFAULTS.exclude,
    flush_seconds: float = _DEFAULTS.flush_seconds,
    attention_every: int | None = None,
    pre_clip: bool = _DEFAULTS.pre_clip,
    config: WatchConfig | None = None,
    scaler: Any = None,
    user_config: dict[str, Any] | None = None,
    resume: bool = False,
    guard: Any = None,
    mirror: Any = None,
) -> Run:
    """Record per-layer gradient, activation and weight statistics of `model` while it trains.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> with graddoctor.watch(model, opt) as run:
        ...     for _ in range(3):
        ...         loss = model(torch.randn(16, 4)).pow(2).mean()
        ...         opt.zero_grad(); loss.backward(); opt.step()
        ...         run.log(loss=loss)
        >>> graddoctor.load(run).steps
        array([0, 1, 2])

    Args:
        model: any `nn.Module` (a `torch.compile`d, DataParallel- or DDP-wrapped one is watched through
            its inner module; an FSDP2 `fully_shard`ed one through its local shards). Under
            torch.distributed call `watch` on every rank with the same arguments: statistics are
            reduced over ranks and rank 0 alone writes the store (docs/distributed.md).
        optimizer: steps are detected from it (one record per `optimizer.step()`); without one,
            call `run.step()` after each backward.
        store: path of the SQLite run store (created if missing), an open `RunStore`, or
            ":memory:" (the default: readable through `graddoctor.load(run)` until exit).
        name: run name (default: a timestamp). Several runs may share a name; readers take the latest.
        every: record one optimizer step in `every` (the cheap tier: gradient and dL/d output norms,
            non-finite detection, logged scalars, learning rates); steps in between cost next to nothing.
        full_every: also record the full tier (activation statistics, weight norms, update_ratio,
            histograms, per-time-step, logit, attention and pre-clip statistics) at steps that are
            multiples of this; None (the default): 10 * every.
        full_first: the first `full_first` recorded steps record the full tier too (default 10).
        budget: e.g. 0.03: choose the full tier's interval so that it adds about this share of
            the step time, from host timings of its own recorded steps (docs/overhead.md).
        hist_every, update_ratio, include, exclude, flush_seconds: what is recorded and when (see
            `WatchConfig`, which documents each and its default).
        config: a `WatchConfig` holding all of the above at once, instead of passing them one by one.
        scaler: the `torch.amp.GradScaler` in use, so that dL/d output is recorded unscaled and
            the loss scale is logged as `amp_scale`.
        user_config: your own settings (JSON-able), stored with the run.
        resume: continue the latest run called `name`, with its step numbering.
        guard: None (the default: nothing acts), "default" (warn on every online finding, skip steps
            whose gradients are not finite, stop after 5 skips in a row), or a `graddoctor.probes.guard.Guard`
            (docs/guards.md: what each action does to training and what it cannot undo).
        mirror: copy the run into experiment trackers as it records: a tracker mirror such as
            `graddoctor.integrations.mlflow.MlflowMirror(...)` or `...wandb.WandbMirror(...)`, or a list
            of them (docs/trackers.md). Sent from the store writer's thread, never from the training step.
            `WatchConfig`).

    Returns:
        The `Run`, a context manager: hooks are attached on return and removed when the `with`
        block exits, which also marks the run finished (or failed, if the block raised).

    Raises:
        ConfigError: a bad argument (not a Module, no trainable parameters, every=0, an optimizer
            that does not hold the model's parameters, both `config` and one of its fields), an unsupported wrapper
            (FSDP1, DeepSpeed, HSDP), or ranks that watch differently.
        StoreError: the store path is unwritable or is not a graddoctor store (under
            torch.distributed: on rank 0, raised on every rank).
    """
    check_watch(model, optimizer, store, RunStore, user_config=user_config, scaler=scaler, resume=resume)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"name must be a string, got {type(name).__name__}.")
    if resume and name is None:
        raise ConfigError("resume=True needs the name of the run to continue: watch(..., name='exp1', resume=True).")
    options = {"every": every, "full_every": full_every, "full_first": full_first, "budget": budget,
               "hist_every": hist_every, "update_ratio": update_ratio, "include": include,
               "exclude": exclude, "flush_seconds": flush_seconds, "attention_every": attention_every,
               "pre_clip": pre_clip}  # attention_every, pre_clip: docs/transformers.md
    cfg = _watch_config(config, options)
    reducer = distributed.setup(unwrap(model))  # None on a single process: nothing distributed runs then
    run = Run(
        model, optimizer, store=store, name=name, config=cfg, scaler=scaler, user_config=user_config, resume=resume,
        reducer=reducer, guard=guard, mirror=mirror_feeds(mirror),
    )
    return run.attach()


def _watch_config(config: WatchConfig | None, options: dict[str, Any]) -> WatchConfig:
    """The `WatchConfig` of a `watch` call: `config` as given, or one made of the separate options."""
    if config is None:
        return WatchConfig(**options)
    if not isinstance(config, WatchConfig):
        raise ConfigError(f"config must be a graddoctor.config.WatchConfig, got {type(config).__name__}; "
                          "your own settings go in user_config=.")
    given = sorted(k for k, v in options.items()
                   if v != getattr(_DEFAULTS, k) and not (k in ("hist_every", "attention_every", "full_every", "budget") and v is None))
    if given:
        raise ConfigError(f"watch() got config= and also {', '.join(given)}; put them in the WatchConfig "
                          f"(dataclasses.replace(config, {given[0]}=...)) or drop config=.")
    return config
