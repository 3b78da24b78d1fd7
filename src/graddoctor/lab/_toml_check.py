"""Reading a study .toml file safely: bytes to a checked document, every refusal naming the file and line.

Checks made here, before any spec is built: UTF-8, TOML syntax (and nesting depth), the sections
and keys allowed (also inside [quick.*]), each value's type from the spec's own field types
(booleans are booleans: `residual = "no"` is refused), finite numbers, integers within bounds, no
empty sweep, and a study name that is a plain file name (it names the output folder).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..train.spec import NetSpec, TrainSpec

MAX_INT = 10**9          # no field of a study is larger (steps, width, batch); a longer integer is a typo
MAX_BYTES = 1 << 20      # a study file is a page of settings
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
STUDY_KEYS = {"name", "title", "summary", "data"}


def read_document(path: Path) -> tuple[str, dict[str, Any]]:
    """The text and parsed document of a study file; ConfigError for any file that is not a readable TOML."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the study file {str(path)!r}: {err.strerror or err}.") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: {len(raw)} bytes is too large for a study file (at most {MAX_BYTES}).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (byte {err.start}); save the file as UTF-8.") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not a study file: arrays or tables nested too deeply to read.") from None


def field_types(spec: type) -> dict[str, tuple[type, ...]]:
    """Allowed Python types per field of a spec dataclass (int fields also take no bool; float takes int)."""
    hints = typing.get_type_hints(spec)
    out = {}
    for f in dataclasses.fields(spec):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        out[f.name] = tuple(a for a in args if a is not type(None)) + ((type(None),) if type(None) in args else ())
    return out


TYPES = {"net": field_types(NetSpec), "train": field_types(TrainSpec)}


def check_document(path: Path, text: str, doc: dict[str, Any]) -> None:
    """Sections, keys, value types and ranges, each refusal with its line."""
    lines = Lines(path, text)
    study = doc.get("study", {})
    if isinstance(study, dict):
        for key in STUDY_KEYS & set(study):
            if not isinstance(study[key], str):
                raise lines.error("study", key, f"[study] {key} must be a string, got {_kind(study[key])}")
        name = study.get("name")
        if isinstance(name, str) and not NAME.fullmatch(name):
            raise lines.error("study", "name", f"[study] name {name[:60]!r} must be a plain name (letters, digits, "
                              f"'.', '_', '-'; no '/' or '..'): it names the output folder")
    quick = doc.get("quick", {})
    if isinstance(quick, dict):
        for sub, body in quick.items():
            if sub not in TYPES:
                raise lines.error("quick", sub, f"[quick] has no section {sub!r}; it may hold [quick.net] and "
                                  f"[quick.train]", header=f"quick.{sub}")
            if not isinstance(body, dict):
                raise lines.error("quick", sub, f"quick.{sub} must be a [quick.{sub}] section, got {_kind(body)}")
            for key, value in body.items():
                if key in TYPES[sub]:
                    _check_value(lines, f"quick.{sub}", key, value, TYPES[sub][key])
    for section in ("net", "train"):
        body = doc.get(section, {})
        if isinstance(body, dict):
            for key, value in body.items():
                if key in TYPES[section]:
                    _check_value(lines, section, key, value, TYPES[section][key])
    analysis = doc.get("analysis")
    if isinstance(analysis, dict) and "metrics" in analysis:
        metrics = analysis["metrics"]
        if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)):
            raise lines.error("analysis", "metrics", "[analysis] metrics must be a non-empty list of metric names")


def _check_value(lines: "Lines", section: str, key: str, value: Any, types: tuple[type, ...]) -> None:
    where = f"[{section}] {key}"
    if isinstance(value, list):
        if not value:
            raise lines.error(section, key, f"{where} = [] is an empty sweep: it would train nothing. Give at least one "
                              f"value, or remove the key for the default")
        for item in value:
            if isinstance(item, (list, dict)):
                raise lines.error(section, key, f"{where}: a sweep is a flat list of values, got {_kind(item)} inside it")
            _check_scalar(lines, section, key, item, types, where)
        return
    _check_scalar(lines, section, key, value, types, where)


def _check_scalar(lines: "Lines", section: str, key: str, value: Any, types: tuple[type, ...], where: str) -> None:
    expected = " or ".join(_type_name(t) for t in types if t is not type(None))
    ok = (isinstance(value, bool) if bool in types else False) or any(
        isinstance(value, t) and not isinstance(value, bool) for t in types if t not in (bool, type(None)))
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise lines.error(section, key, f"{where} must be {expected}, got {_kind(value)} {_short(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise lines.error(section, key, f"{where} must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise lines.error(section, key, f"{where} = {_short(value)} is out of range (at most {MAX_INT:.0e})")


def _type_name(t: type) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(t, t.__name__)


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    if isinstance(value, int) and len(text) > 30:
        return f"({len(text)} digits)"
    return text if len(text) <= 40 else text[:37] + "..."


class Lines:
    """Line numbers of keys within their own section, for messages `file, line N: ...`."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def header(self, section: str) -> int:
        pattern = re.compile(rf"^\s*\[\s*{re.escape(section)}\s*\]")
        return next((n for n, line in enumerate(self.lines, 1) if pattern.match(line)), 0)

    def line(self, section: str, key: str, header: str | None = None) -> int | str:
        if header is not None and self.header(header):
            return self.header(header)
        start = self.header(section)
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        dotted = re.compile(rf"^\s*{re.escape(section.split('.')[-1])}\.{re.escape(key)}\s*=")
        for n, line in enumerate(self.lines, 1):
            if n > start and (pattern.match(line) or dotted.match(line)):
                return n
        return "?"

    def error(self, section: str, key: str, message: str, header: str | None = None) -> ConfigError:
        return ConfigError(f"{self.path}, line {self.line(section, key, header)}: {message}.")
