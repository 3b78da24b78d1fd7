"""Models and data named on the command line: `path/to/file.py:factory`, `package.module:factory`, `.npz`.

Loading a model spec *imports and runs the user's code* (the module, then `factory()`): only
point it at code you trust.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .errors import ConfigError

_SPEC_HELP = "MODEL must be path/to/file.py:factory or package.module:factory (a function returning an nn.Module)"


def load_model(spec: str) -> nn.Module:
    """Import the module named by `spec`, call its factory with no arguments, return the model.

    Example:
        >>> model = load_model("examples/deep_sigmoid.py:build")     # doctest: +SKIP

    Raises:
        ConfigError: a malformed spec, a missing file or module, a missing factory, a factory that
            raises or returns something that is not an `nn.Module`.
    """
    where, sep, factory_name = spec.rpartition(":")
    if not sep or not where or not factory_name.isidentifier():
        raise ConfigError(f"{_SPEC_HELP}; got {spec!r}.")
    module = _import_file(where) if where.endswith(".py") or os.sep in where or "/" in where else _import_module(where)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"{where} has no function {factory_name!r}; it defines: {', '.join(defined) or 'none'}.")
    return call_factory(factory, f"the factory {spec}")


def call_factory(factory: Any, what: str = "the model factory") -> nn.Module:
    """`factory()`, refused with a ConfigError naming `what` when it raises or returns no nn.Module."""
    try:
        model = factory()
    except Exception as err:
        raise ConfigError(f"{what} raised {type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{what} returned a {type(model).__name__}, not a torch.nn.Module: return the model itself.")
    return model


def _import_file(path_text: str) -> Any:
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"no such file: {path_text!r} (from MODEL {path_text}:...). {_SPEC_HELP}.")
    name = f"graddoctor_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path_text!r} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    with _on_path(str(path.resolve().parent)):  # the file may import its neighbours
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            raise ConfigError(f"importing {path_text} raised {type(err).__name__}: {err}") from err
    return module


def _import_module(name: str) -> Any:
    with _on_path(os.getcwd()):  # `graddoctor` as a console script does not put the cwd on sys.path
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:
            raise ConfigError(
                f"cannot import module {name!r}: {err}. Install it, run from the folder that holds it, or "
                f"give a file path (path/to/file.py:factory)."
            ) from None
        except Exception as err:
            raise ConfigError(f"importing {name} raised {type(err).__name__}: {err}") from err


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def parse_shape(text: str) -> tuple[int, ...]:
    """'64,784' -> (64, 784): batch size first, then one sample's shape."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        shape = ()
    if len(shape) < 2 or any(n < 1 for n in shape):
        raise ConfigError(
            f"--input-shape takes the batch size then a sample's shape, as positive integers: 64,784 or 32,3,32,32; "
            f"got {text!r}."
        )
    return shape


def first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first module, in definition order, that owns parameters (where inputs usually enter)."""
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is not None:
            return name, module
    return None


def expected_input(model: nn.Module) -> str | None:
    """A description of the input shape the model's first layer expects, when it can be read."""
    found = first_layer(model)
    if found is None:
        return None
    name, m = found
    where = f"its first layer, {name!r} ({type(m).__name__}),"
    if isinstance(m, nn.Embedding):
        return f"{where} takes integer token ids in [0, {m.num_embeddings}), shape (N, T)"
    if isinstance(m, (nn.RNNBase,)):
        order = "(N, T, {})" if m.batch_first else "(T, N, {})"
        return f"{where} expects inputs of shape {order.format(m.input_size)}"
    if hasattr(m, "in_channels") and isinstance(m.in_channels, int):
        spatial = {nn.Conv1d: ", L", nn.Conv2d: ", H, W", nn.Conv3d: ", D, H, W"}.get(type(m), ", ...")
        return f"{where} expects inputs of shape (N, {m.in_channels}{spatial})"
    if hasattr(m, "in_features") and isinstance(m.in_features, int):
        return f"{where} expects inputs of shape (N, ..., {m.in_features})"
    if hasattr(m, "normalized_shape"):
        return f"{where} expects inputs whose last dimensions are {tuple(m.normalized_shape)}"
    return None


def random_inputs(model: nn.Module, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Random inputs for `model`: N(0, 1) floats, or token ids when its first layer is an Embedding."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    found = first_layer(model)
    if found is not None and isinstance(found[1], nn.Embedding):
        return torch.randint(0, found[1].num_embeddings, shape, generator=generator).to(device)
    return torch.randn(shape, generator=generator).to(device)


def load_data(path: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs and optional targets from an .npz file (arrays `x` and `y`), the first `n` samples.

    Raises:
        ConfigError: a missing or unreadable file, or no input array in it.
    """
    if not Path(path).is_file():
        raise ConfigError(f"no such data file: {path!r}. --data takes an .npz file with arrays 'x' (and 'y').")
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as err:
        raise ConfigError(f"cannot read {path!r} as a NumPy .npz file: {err}") from None
    x = next((arrays[k] for k in ("x", "X", "inputs", "data") if k in arrays), None)
    if x is None:
        raise ConfigError(f"{path!r} holds arrays {sorted(arrays)}; it needs the inputs under 'x' (targets under 'y').")
    y = next((arrays[k] for k in ("y", "Y", "targets", "labels", "target") if k in arrays), None)
    n = len(x) if n is None else min(n, len(x))
    xt = torch.as_tensor(x[:n])
    xt = xt.float() if xt.is_floating_point() else xt.long()
    yt = None
    if y is not None:
        yt = torch.as_tensor(y[:n])
        yt = yt.float() if yt.is_floating_point() else yt.long()
    return xt, yt
