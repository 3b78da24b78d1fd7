"""Studies a user writes as a TOML file: a grid of `NetSpec`/`TrainSpec` values x seeds, and a table of metrics.

    [study]
    name = "sigmoid-vs-relu"          # default: the file's name
    title = "Sigmoid vs ReLU at depth"
    data = "digits"                   # graddoctor.data: digits, mnist1d, mnist, teacher, gaussian, x.npz, idx:IMG:LBL

    [net]                             # NetSpec fields; a list is a sweep axis
    depth = [5, 10, 20]
    activation = ["sigmoid", "relu"]

    [train]                           # TrainSpec fields; a list is a sweep axis
    optimizer = "sgd"
    lr = 0.05
    steps = 300

    [quick.net]                       # replacements under --quick (same form), e.g. fewer steps or depths
    depth = [5, 10]
    [quick.train]
    steps = 60

    [analysis]
    metrics = ["test_accuracy", "final_loss", "grad_ratio"]   # columns, mean ± std over seeds

Metrics: test_accuracy, test_loss, final_loss, diverged (fraction of seeds), grad_ratio (first over
last Linear/Conv layer's ||dL/dh|| at the first step: < 1 vanishing, > 1 exploding), dead_frac
(mean dead fraction of the activation layers at the last recorded step).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .claims._common import act_layers, axes, first_last
from ._toml_check import check_document, read_document
from .results import Results, mean_spread
from ..train.spec import NetSpec, RunSpec, TrainSpec
from .study import Settings, Study
from .sweep import grid

SECTIONS = {"study": {"name", "title", "summary", "data"}, "net": {f.name for f in dataclasses.fields(NetSpec)},
            "train": {f.name for f in dataclasses.fields(TrainSpec)}, "quick": {"net", "train"}, "analysis": {"metrics"}}
METRICS = ("test_accuracy", "test_loss", "final_loss", "diverged", "grad_ratio", "dead_frac")


def load_toml(path: str | Path) -> Study:
    """A `Study` from a TOML file (format in this module's docstring).

    Raises:
        ConfigError: a missing file, a TOML syntax error (with its line), an unknown section or key
            (with its line and the keys allowed), or a value the specs refuse.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no such study file: {str(path)!r}.")
    text, doc = read_document(path)
    check_document(path, text, doc)
    _check_keys(path, text, doc)
    name = doc.get("study", {}).get("name", path.stem)
    metrics = tuple(doc.get("analysis", {}).get("metrics", ("test_accuracy", "final_loss", "grad_ratio")))
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ConfigError(f"{path}, line {_line(text, 'metrics')}: [analysis] metrics {bad} unknown; the metrics are {', '.join(METRICS)}.")
    spec = TomlSpec(str(path), doc, metrics)
    _check_values(path, text, spec)
    study = doc.get("study", {})
    return Study(name=name, title=study.get("title", f"Study {name} ({path.name})"),
                 summary=study.get("summary", f"A sweep declared in {path.name}."),
                 runs=functools.partial(runs_of, spec), analyse=functools.partial(analyse, spec),
                 report=functools.partial(report, spec))


@dataclasses.dataclass(frozen=True)
class TomlSpec:
    path: str
    doc: dict[str, Any]
    metrics: tuple[str, ...]


def _check_keys(path: Path, text: str, doc: dict[str, Any]) -> None:
    for section, body in doc.items():
        if section not in SECTIONS:
            raise ConfigError(f"{path}, line {_line(text, section, header=True)}: unknown section [{section}]; "
                              f"the sections are {', '.join(f'[{s}]' for s in SECTIONS)}.")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}, line {_line(text, section)}: {section!r} must be a [section].")
        subsections = {"net": body.get("net", {}), "train": body.get("train", {})} if section == "quick" else {section: body}
        for name, keys in subsections.items():
            allowed = SECTIONS[name] if section != "quick" or name in SECTIONS["quick"] else set()
            for key in keys:
                if key not in allowed:
                    where = f"[quick.{name}]" if section == "quick" else f"[{section}]"
                    raise ConfigError(f"{path}, line {_line(text, key)}: {where} has no key {key!r}; the keys are "
                                      f"{', '.join(sorted(allowed))}.")


def _check_values(path: Path, text: str, spec: TomlSpec) -> None:
    """Build every run of the full and quick variants now, before any training; a refused value names its line."""
    for quick in (False, True):
        try:
            runs_of(spec, Settings(quick=quick))
        except ConfigError as err:
            message = str(err).removeprefix(f"{spec.path}: ")
            key = next((k for k in sorted(SECTIONS["net"] | SECTIONS["train"], key=len, reverse=True)
                        if re.search(rf"\b{k}\b", message)), None)
            after = _line(text, "quick", header=True) if quick else 0  # the quick variant's value sits below [quick.*]
            number = _line(text, key, after=after if isinstance(after, int) else 0) if key else "?"
            raise ConfigError(f"{path}, line {number}, {message}") from None


def _line(text: str, key: str, header: bool = False, after: int = 0) -> int | str:
    """The number of the first line after line `after` that sets `key` (or opens section `key`); '?' if none."""
    pattern = rf"^\s*\[\s*{re.escape(key)}[\].]" if header else rf"^\s*{re.escape(key)}\s*="
    for number, line in enumerate(text.splitlines(), 1):
        if number > after and re.match(pattern, line):
            return number
    return "?"


def runs_of(spec: TomlSpec, settings: Settings) -> list[RunSpec]:
    net, train = dict(spec.doc.get("net", {})), dict(spec.doc.get("train", {}))
    if settings.quick:
        net |= spec.doc.get("quick", {}).get("net", {})
        train |= spec.doc.get("quick", {}).get("train", {})
    axes = {f"net.{k}": v for k, v in net.items() if isinstance(v, list)}
    axes |= {f"train.{k}": v for k, v in train.items() if isinstance(v, list)}
    fixed_net = {k: v for k, v in net.items() if not isinstance(v, list)}
    fixed_train = {k: v for k, v in train.items() if not isinstance(v, list)}
    try:
        base = RunSpec("base", NetSpec(**fixed_net), TrainSpec(**fixed_train), spec.doc.get("study", {}).get("data", "digits"))
        return grid(base, axes, range(settings.seeds))
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{spec.path}: {err}") from None


def _axes(results: Results) -> list[str]:
    keys = sorted({k for r in results.records for k, _ in r.spec.tags})
    return keys


def _metric(record: Any, metric: str) -> float:
    if metric == "diverged":
        return float(bool(record.metrics.get("diverged")))
    if metric in ("grad_ratio", "dead_frac"):
        view = record.view()
        if metric == "grad_ratio":
            return first_last(view)
        names = act_layers(view)
        return float(np.mean([view.stat("dead_frac", n)[-1] for n in names])) if names else float("nan")
    return record.metric(metric)


def analyse(spec: TomlSpec, results: Results, settings: Settings) -> dict[str, Any]:
    axes = _axes(results)
    groups: dict[tuple, list] = {}
    for r in results.records:
        groups.setdefault(tuple(r.spec.tag(k) for k in axes), []).append(r)
    rows, numbers = [], []
    for key, recs in groups.items():
        stats = {m: mean_spread([_metric(r, m) for r in recs]) for m in spec.metrics}
        numbers.append({"config": dict(zip(axes, key)), "metrics": stats})
        rows.append([*map(str, key), *(_cell(stats[m]) for m in spec.metrics)])
    return {"table": {"header": [*axes, *spec.metrics], "rows": rows}, "configs": numbers}


def _cell(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "n/a"
    mean, std = s["mean"], s["std"]
    return f"{mean:.3g} ± {std:.2g}"


def report(spec: TomlSpec, page: Any, analysis: dict[str, Any], results: Results) -> None:
    table = analysis["table"]
    with page.section("Results", anchor="results"):
        page.paragraph(f"Mean ± standard deviation over {results.records and max(r.spec.seed for r in results.records) + 1} seeds.")
        page.table(table["header"], table["rows"])
        metric = spec.metrics[0]
        fig, (ax,) = axes()
        labels = [" ".join(f"{k}={v}" for k, v in c["config"].items()) or "base" for c in analysis["configs"]]
        means = [c["metrics"][metric]["mean"] or 0.0 for c in analysis["configs"]]
        stds = [c["metrics"][metric]["std"] or 0.0 for c in analysis["configs"]]
        ax.bar(range(len(labels)), means, yerr=stds, color="#1f5fa8")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize="small")
        ax.set_ylabel(metric)
        page.figure(fig, caption=f"{metric} per configuration (mean ± std over seeds).")
