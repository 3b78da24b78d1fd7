"""Sweeps: many `RunSpec`s (spec values x seeds) trained in parallel processes into one store, resumably.

Every run is watched into the store under its name; its config (`RunSpec.to_dict`) and metrics
go into a side table of the same SQLite file, written as soon as the run finishes:

    CREATE TABLE lab_runs (name TEXT PRIMARY KEY, config_json TEXT, metrics_json TEXT, finished REAL)

A run whose name is in `lab_runs` with the same config is not trained again: after a crash or
Ctrl-C, running the sweep again trains only what is missing. A run whose config changed (say,
--quick then a full run into the same directory) is trained again and replaces the old entry.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sqlite3
import time
from typing import Any, Iterable, Sequence

from ..errors import ConfigError
from ..train.pool import check_backend, cores, parallel_map
from ..train.shard import in_shard, merge_shard
from .results import Record, Results
from ..train.spec import RunSpec
from ..train.trainer import train_run

SIDE_TABLE = """CREATE TABLE IF NOT EXISTS lab_runs (
    name TEXT PRIMARY KEY, config_json TEXT NOT NULL, metrics_json TEXT NOT NULL, finished REAL NOT NULL)"""


def grid(base: RunSpec, axes: dict[str, Sequence[Any]], seeds: Iterable[int], *, prefix: str = "") -> list[RunSpec]:
    """The cross product of `axes` x `seeds` over `base`: one `RunSpec` per point, named and tagged by its values.

    Axis keys are "net.FIELD", "train.FIELD" or "data" (e.g. {"net.depth": [5, 10], "net.init": ["he"]});
    each point is tagged with its axis values under the field name ("depth", "init", ...).
    """
    keys = list(axes)
    specs = []
    for values in itertools.product(*(axes[k] for k in keys)):
        point = dict(zip(keys, values))
        for seed in seeds:
            spec = _replace(base, point, seed)
            label = "/".join(f"{k.split('.')[-1]}={v}" for k, v in point.items()) or "base"
            tags = dict(base.tags) | {k.split(".")[-1]: v for k, v in point.items()}
            specs.append(dataclasses.replace(spec, name=f"{prefix}{label}/s{seed}", tags=tuple(sorted(tags.items()))))
    return specs


def _replace(base: RunSpec, point: dict[str, Any], seed: int) -> RunSpec:
    net, train, data = {}, {}, base.data
    for key, value in point.items():
        part, _, field = key.partition(".")
        if key == "data":
            data = value
        elif part == "net":
            net[field] = value
        elif part == "train":
            train[field] = value
        else:
            raise ConfigError(f"a sweep axis is 'net.FIELD', 'train.FIELD' or 'data'; got {key!r}.")
    try:
        return dataclasses.replace(base, net=dataclasses.replace(base.net, **net),
                                   train=dataclasses.replace(base.train, **train), data=data, seed=seed)
    except TypeError as err:
        raise ConfigError(f"sweep axes {sorted(point)}: {err}") from None


def run_sweep(specs: Sequence[RunSpec], store: str | os.PathLike[str], *, jobs: int | None = None,
              progress: bool = True, backend: str = "process", ray_address: str | None = None) -> Results:
    """Train every spec not already finished in `store` (jobs processes; default: all cores); return all results.

    `backend="ray"`: each run is a Ray task (`ray_address`: the cluster; None, a local Ray) that
    trains into a store shard of its own; the shard's run is copied into `store` here, before the
    run counts as finished (train/shard.py), so an interrupted sweep resumes the same way.

    Raises:
        ConfigError: two specs with the same name.
    """
    from ..store.sqlite import RunStore

    check_backend(backend, ray_address)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"run names must be unique within a sweep; {dup[:3]} appear more than once.")
    store = os.fspath(store)
    RunStore(store).close()  # the schema, created once before the workers race to
    with _connect(store) as db:
        db.execute(SIDE_TABLE)
    done = finished(store)
    todo = [s for s in specs if done.get(s.name, (None,))[0] != json.loads(json.dumps(s.to_dict()))]
    jobs = jobs or cores()
    if backend == "ray":
        for spec, (metrics, shard) in parallel_map(_train_shard, todo, jobs=jobs, progress=progress,
                                                   label=lambda s: s.name, backend=backend, ray_address=ray_address):
            merge_shard(shard, store)
            _save(store, spec, metrics)
    else:
        for (spec, _), metrics in parallel_map(_train, [(s, store) for s in todo], jobs=jobs, progress=progress,
                                               label=lambda item: item[0].name, backend=backend,
                                               ray_address=ray_address):
            _save(store, spec, metrics)
    done = finished(store)
    cache: dict[str, Any] = {}  # RunViews read once, shared by every record of these results
    return Results(store, tuple(Record(s, done[s.name][1], store, cache) for s in specs))


def _train(item: tuple[RunSpec, str]) -> dict[str, Any]:
    spec, store = item
    return train_run(spec, store)


def _train_shard(spec: RunSpec) -> tuple[dict[str, Any], bytes]:
    return in_shard(lambda path: train_run(spec, path))


def finished(store: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (config, metrics) of the runs recorded in the side table."""
    with _connect(store) as db:
        db.execute(SIDE_TABLE)
        rows = db.execute("SELECT name, config_json, metrics_json FROM lab_runs").fetchall()
    return {name: (json.loads(c), json.loads(m)) for name, c, m in rows}


def training_seconds(store: str, names: Sequence[str]) -> dict[str, float]:
    """How long the runs `names` of `store` took to train, however many invocations trained them.

    "seconds": wall time, the length of the union of the runs' training intervals
    [finished - seconds, finished] (runs trained side by side count once, the time between two
    invocations not at all); "run_seconds": the sum of the runs' own training times. Re-analysing a
    finished sweep reads the same numbers again.
    """
    done = finished(store)
    with _connect(store) as db:
        ends = dict(db.execute("SELECT name, finished FROM lab_runs").fetchall())
    spans = sorted((ends[n] - float(done[n][1].get("seconds", 0.0)), ends[n]) for n in names if n in done)
    wall, reach = 0.0, -float("inf")
    for start, end in spans:
        wall += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return {"seconds": round(wall, 3), "run_seconds": round(sum(e - s for s, e in spans), 3)}  # ms: a tiny run is not 0


def _save(store: str, spec: RunSpec, metrics: dict[str, Any]) -> None:
    with _connect(store) as db:
        db.execute("INSERT OR REPLACE INTO lab_runs VALUES (?, ?, ?, ?)",
                   (spec.name, json.dumps(spec.to_dict()), json.dumps(metrics), time.time()))


def _connect(store: str) -> sqlite3.Connection:
    db = sqlite3.connect(store, timeout=60)
    db.isolation_level = None  # autocommit: each statement is its own transaction
    return db
