"""The registry of named studies: every `STUDY` of graddoctor.lab.studies, and .toml files (see study.py)."""

from __future__ import annotations

import importlib
import pkgutil
import warnings

from ..errors import ConfigError
from .study import Study
from .toml_study import load_toml


def studies() -> dict[str, Study]:
    """Every registered study by name: the `STUDY` of each module in graddoctor.lab.studies, sorted by name."""
    package = importlib.import_module(f"{__package__}.studies")
    found: dict[str, Study] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
        except Exception as err:  # one broken study must not hide the others
            warnings.warn(f"study module graddoctor.lab.studies.{info.name} failed to import and is skipped: "
                          f"{type(err).__name__}: {err}", RuntimeWarning, stacklevel=2)
            continue
        study = getattr(module, "STUDY", None)
        if not isinstance(study, Study):
            raise ConfigError(f"graddoctor.lab.studies.{info.name} has no STUDY = Study(...); every module there must define one.")
        if study.name in found:
            raise ConfigError(f"two studies are called {study.name!r}; names must be unique.")
        found[study.name] = study
    return dict(sorted(found.items()))


def get_study(name: str) -> Study:
    """The registered study `name`, or a .toml file's study.

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    if name.endswith(".toml"):
        return load_toml(name)
    known = studies()
    if name not in known:
        raise ConfigError(f"unknown study {name!r}; the studies are: {', '.join(known)} (or give a .toml file).")
    return known[name]
