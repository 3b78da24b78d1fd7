"""Every error graddoctor raises on purpose is a GradDoctorError subclass (read from the source with ast).

A `raise ValueError(...)` (or any builtin exception) in src/ fails this test unless it is on the
allow-list below, each entry with the protocol that requires the builtin. Use errors.ConfigError
(a ValueError), ArgumentTypeError (a TypeError), NotFoundError (a KeyError), ProbeError (a
RuntimeError) or StoreError (an OSError): callers' `except ValueError` keeps working.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

import graddoctor
from graddoctor import errors

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "graddoctor"
BUILTIN_ERRORS = {name for name, value in vars(builtins).items()
                  if isinstance(value, type) and issubclass(value, BaseException)}

# (module, exception): why the builtin itself is required there.
ALLOWED = {
    ("lab/__init__.py", "AttributeError"),  # module __getattr__: Python's import protocol wants AttributeError
    ("store/lazy.py", "KeyError"),          # Mapping.__getitem__: `in`, .get() and ** rely on a bare KeyError
}


def raised_builtins(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every `raise Builtin(...)` / `raise Builtin` in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        name = exc.id if isinstance(exc, ast.Name) else None
        if name in BUILTIN_ERRORS:
            found.append((node.lineno, name))
    return found


def test_no_deliberate_error_is_a_bare_builtin():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        bad += [f"{rel}:{line}: raise {name}" for line, name in raised_builtins(path) if (rel, name) not in ALLOWED]
    assert not bad, "raise a graddoctor.errors class instead (it subclasses the builtin):\n" + "\n".join(bad)


def test_the_allow_list_is_still_needed():
    used = {(path.relative_to(PACKAGE).as_posix(), name)
            for path in PACKAGE.rglob("*.py") for _, name in raised_builtins(path)}
    assert ALLOWED <= used, f"no longer raised, drop from ALLOWED: {sorted(ALLOWED - used)}"


def test_the_walker_sees_a_bare_raise(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f(x):\n    if x:\n        raise ValueError('no')\n    raise errors.ConfigError('fine')\n")
    assert raised_builtins(src) == [(3, "ValueError")]


@pytest.mark.parametrize("cls, builtin", [(errors.ConfigError, ValueError), (errors.ArgumentTypeError, TypeError),
                                          (errors.NotFoundError, KeyError), (errors.ProbeError, RuntimeError),
                                          (errors.StoreError, OSError)])
def test_each_error_is_a_graddoctor_error_and_its_builtin(cls, builtin):
    assert issubclass(cls, graddoctor.GradDoctorError) and issubclass(cls, builtin)


def test_not_found_reads_as_its_message():
    err = errors.NotFoundError("no layer 'x' in run 'r'; its layers are: 0, 1.")
    assert str(err) == "no layer 'x' in run 'r'; its layers are: 0, 1."  # KeyError would quote it
    with pytest.raises(errors.NotFoundError, match="known remedies"):
        graddoctor.remedies.catalog.get_remedy("no_such_remedy")
