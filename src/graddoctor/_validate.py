"""Argument checks for the public functions: each names the argument, what it got and what it expects.

    check_int("steps", steps, minimum=1, maximum=MAX_STEPS)

A failed check raises `ConfigError` (a `GradDoctorError` and a `ValueError`); a wrong type raises
`ArgumentTypeError` (a `GradDoctorError` and a `TypeError`). Imports nothing heavier than os.
"""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import ConfigError

MAX_STEPS = 10_000_000      # an optimizer-step count past this is a typo, not a training run
MAX_CHECK_STEPS = 100_000  # graddoctor check trains on one batch: a few dozen steps are its use
MAX_BATCH = 1 << 24         # samples in one batch
MAX_ELEMENTS = 1 << 31      # elements of one generated tensor (8 GiB of float32): refused before allocating
MAX_DEPTH = 10_000          # layers of a described MLP (the theory recursion runs per layer)
MAX_SEEDS = 1_000
MAX_JOBS = 1_024


class ArgumentTypeError(ConfigError, TypeError):
    """An argument of the wrong type (a string where a bool is expected, a number for a path)."""


def _got(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def check_bool(name: str, value: Any) -> bool:
    """True or False only: "no", 0 and None are refused, since "no" would read as true."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be True or False, got {_got(value)}.")
    return value


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              optional: bool = False) -> Any:
    """An int (not a bool) within [minimum, maximum]; None passes when `optional`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an integer, got {_got(value)}.")
    shown = str(value) if len(str(value)) <= 30 else f"a {len(str(abs(value)))}-digit number"
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {shown}.")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be an integer <= {maximum}, got {shown}.")
    return value


def check_number(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                 positive: bool = False, optional: bool = False) -> Any:
    """A finite real number (int or float, not a bool), optionally > 0 and within [minimum, maximum]."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number, got {_got(value)}.")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ConfigError(f"{name} must be a finite number, got {value!r}.")
    if positive and not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}.")
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value!r}.")
    return value


def check_str(name: str, value: Any, *, optional: bool = False, nonempty: bool = True) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a string, got {_got(value)}.")
    if nonempty and not value.strip():
        raise ConfigError(f"{name} must not be empty.")
    return value


def check_path(name: str, value: Any, *, optional: bool = False) -> Any:
    """A file path: str or os.PathLike, not empty (bytes, numbers and lists are refused)."""
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)) or isinstance(os.fspath(value), bytes):
        raise ArgumentTypeError(f"{name} must be a file path (str or pathlib.Path), got {_got(value)}.")
    if not os.fspath(value):
        raise ConfigError(f"{name} must not be an empty path.")
    if "\x00" in os.fspath(value):
        raise ConfigError(f"{name} holds a NUL character, which no file name can: got {os.fspath(value)!r}.")
    return value


def check_store(value: Any, store_type: type) -> Any:
    """`store` of watch/compare: a path, an open `RunStore`, or ":memory:"."""
    if isinstance(value, store_type):
        return value
    if not isinstance(value, (str, os.PathLike)) or isinstance(os.fspath(value), bytes):
        raise ArgumentTypeError(f"store must be a file path, a graddoctor RunStore or ':memory:', got {_got(value)}.")
    return check_path("store", value)


def check_strings(name: str, value: Any, *, allow_str: bool = True) -> tuple[str, ...]:
    """A string or a sequence of strings (patterns, remedy ids) as a tuple."""
    if isinstance(value, str) and allow_str:
        return (value,)
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ArgumentTypeError(f"{name} must be a list of strings, got {_got(value)}.")
    items = tuple(value)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise ArgumentTypeError(f"{name} must hold strings only, got {_got(bad[0])} among them.")
    return items


def check_mapping(name: str, value: Any, *, optional: bool = True) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise ArgumentTypeError(f"{name} must be a dict, got {_got(value)}.")
    return value


def check_instance(name: str, value: Any, types: type | tuple[type, ...], expected: str, *,
                   optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, types):
        raise ArgumentTypeError(f"{name} must be {expected}, got {_got(value)}.")
    return value


def check_not_meta(model: Any) -> None:
    """A model on the `meta` device has no values to train or measure: refused before any file is made."""
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.device.type == "meta" for t in tensors):
        raise ConfigError(
            "the model has parameters on the 'meta' device (no values: built under torch.device('meta') or "
            "with init_empty_weights): materialise it first, e.g. model.to_empty(device='cpu') then initialise, "
            "or load its weights."
        )


def check_size(name: str, shape: tuple[int, ...], *, maximum: int = MAX_ELEMENTS) -> None:
    """The number of elements of a tensor about to be allocated, checked before allocating."""
    total = math.prod(shape)
    if total > maximum:
        raise ConfigError(f"{name} {','.join(map(str, shape))} means {total:.3g} elements, more than the "
                          f"{maximum:.3g} graddoctor will allocate: give a smaller batch or sample shape.")


def check_watch(model: Any, optimizer: Any, store: Any, store_type: type, *, user_config: Any = None,
                scaler: Any = None, resume: Any = False) -> None:
    """`graddoctor.watch`'s arguments, checked before any hook is attached or any file is created."""
    import torch

    check_instance("model", model, torch.nn.Module, "a torch.nn.Module")
    if optimizer is not None and not (isinstance(optimizer, torch.optim.Optimizer) or hasattr(optimizer, "param_groups")):
        raise ArgumentTypeError(f"optimizer must be a torch.optim.Optimizer (or None: call run.step() after each "
                                f"backward), got {_got(optimizer)}.")
    check_store(store, store_type)
    check_mapping("config (your own settings)", user_config)
    check_bool("resume", resume)
    if scaler is not None and not (callable(getattr(scaler, "get_scale", None))
                                   and callable(getattr(scaler, "unscale_", None))):
        raise ArgumentTypeError(f"scaler must be the torch.amp.GradScaler in use (or None), got {_got(scaler)}.")
    check_not_meta(model)
