"""The model factory: call one (`call_factory`), or load one named by a MODEL spec (`load_model`:
`path/to/file.py:factory` or `package.module:factory`), for `compare` and the CLI.

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

from torch import nn

from ..errors import ConfigError

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
    except (Exception, SystemExit) as err:
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
        except (Exception, SystemExit) as err:
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
        except (Exception, SystemExit) as err:
            raise ConfigError(f"importing {name} raised {type(err).__name__}: {err}") from err


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
