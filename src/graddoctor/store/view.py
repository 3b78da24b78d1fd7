"""RunView: one recorded run, read back as numpy arrays. Readers never see tensors or modules."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from typing import Any

import numpy as np

from ..errors import ConfigError, StoreError
from .guard_actions import GuardAction, read_actions
from .sqlite import RunStore, effective_status


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    kind: str      # 'param' or 'activation'
    n_params: int
    param_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # {'weight': [out, in], ...}


@dataclasses.dataclass(frozen=True, repr=False)
class RunView:
    """A recorded run, loaded into memory: `stat(name, layer)` is aligned with `steps`.

    Example:
        >>> r = graddoctor.load("runs.db")                    # doctest: +SKIP
        >>> r.stat("out_grad_norm", r.layers[0])[-1]         # doctest: +SKIP
    """

    path: str
    run_id: int
    name: str
    status: str
    config: dict[str, Any]
    env: dict[str, Any]
    error: str | None
    first_nonfinite: dict[str, Any] | None
    layer_info: tuple[LayerInfo, ...]
    steps: np.ndarray                       # recorded optimizer steps, ascending
    wall_time: np.ndarray                   # unix time per recorded step
    _stats: dict[str, np.ndarray]           # stat -> [n_layers, n_steps], NaN where absent
    _recorded: dict[str, np.ndarray]        # stat -> [n_layers, n_steps] bool: a row exists (NaN may be a value)
    _scalars: dict[str, np.ndarray]         # key -> [n_steps]
    _hists: dict[tuple[str, str], list[tuple[int, float, float, int, np.ndarray]]]
    _scalar_recorded: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # key -> [n_steps] bool
    guard_actions: tuple[GuardAction, ...] = ()  # what a guard did while training (store.guard_actions)

    @property
    def layers(self) -> list[str]:
        """Layer names (qualified module names), input side first."""
        return [info.name for info in self.layer_info]

    @property
    def stats(self) -> list[str]:
        """Names of the statistics recorded in this run."""
        return sorted(self._stats)

    @property
    def scalars(self) -> list[str]:
        return sorted(self._scalars)

    def stat(self, stat: str, layer: str) -> np.ndarray:
        """Values of `stat` for `layer`, aligned with `steps` (NaN where not recorded)."""
        i = self._layer_index(layer)
        if stat not in self._stats:
            return np.full(len(self.steps), np.nan)
        return self._stats[stat][i].copy()

    def stat_matrix(self, stat: str) -> np.ndarray:
        """[n_layers, n_steps] array of `stat` (NaN where not recorded)."""
        if stat not in self._stats:
            return np.full((len(self.layer_info), len(self.steps)), np.nan)
        return self._stats[stat].copy()

    def recorded(self, stat: str) -> np.ndarray:
        """[n_layers, n_steps] bool: True where a value of `stat` was recorded (it may be NaN)."""
        if stat not in self._recorded:
            return np.zeros((len(self.layer_info), len(self.steps)), dtype=bool)
        return self._recorded[stat].copy()

    def scalar_recorded(self, key: str) -> np.ndarray:
        """[n_steps] bool: True where `key` was logged (its value may be NaN: a NaN loss)."""
        if key not in self._scalars:
            return np.zeros(len(self.steps), dtype=bool)
        if key not in self._scalar_recorded:
            return ~np.isnan(self._scalars[key])
        return self._scalar_recorded[key].copy()

    def scalar(self, key: str) -> np.ndarray:
        """Per-step scalar (a `run.log` key, `lr/group0`, `amp_scale`), aligned with `steps`."""
        if key not in self._scalars:
            raise KeyError(f"no scalar {key!r} in run {self.name!r}; it has: {', '.join(self.scalars) or 'none'}.")
        return self._scalars[key].copy()

    def hist(self, layer: str, kind: str = "act") -> list[tuple[int, float, float, int, np.ndarray]]:
        """Histograms of `layer` ('act' or 'grad'): (step, lo, hi, nonfinite, counts[64]) per step."""
        self._layer_index(layer)
        return list(self._hists.get((layer, kind), []))

    def row(self, layer: str, step: int | None = None) -> dict[str, float]:
        """Every statistic recorded for `layer` at `step` (default: the last recorded step)."""
        i = self._layer_index(layer)
        col = self.step_index(step)
        return {s: float(self._stats[s][i, col]) for s in self.stats if self._recorded[s][i, col]}

    def step_index(self, step: int | None = None) -> int:
        """Column of `step` in the arrays (default: the last one); KeyError if it was not recorded."""
        if len(self.steps) == 0:
            raise KeyError(f"run {self.name!r} has no recorded step yet.")
        if step is None:
            return len(self.steps) - 1
        hits = np.flatnonzero(self.steps == step)
        if hits.size == 0:
            raise KeyError(
                f"step {step} was not recorded in run {self.name!r}; recorded steps run from "
                f"{int(self.steps[0])} to {int(self.steps[-1])} ({len(self.steps)} of them)."
            )
        return int(hits[0])

    def latest(self, layer: str) -> dict[str, float]:
        """The last recorded value of every statistic of `layer` (a recorded NaN stays NaN)."""
        i = self._layer_index(layer)
        out = {}
        for stat in self.stats:
            present = np.flatnonzero(self._recorded[stat][i])
            if present.size:
                out[stat] = float(self._stats[stat][i, present[-1]])
        return out

    def _layer_index(self, layer: str) -> int:
        for i, info in enumerate(self.layer_info):
            if info.name == layer:
                return i
        raise KeyError(f"no layer {layer!r} in run {self.name!r}; its layers are: {', '.join(self.layers)}.")

    def __repr__(self) -> str:
        return (
            f"RunView(name={self.name!r}, status={self.status!r}, layers={len(self.layer_info)}, "
            f"steps={len(self.steps)}, stats={self.stats})"
        )


def load(source: Any, name: str | None = None) -> RunView:
    """Read a run: from a store path (the latest run, or the latest called `name`) or a live run.

    Example:
        >>> r = graddoctor.load("runs.db", name="exp1")       # doctest: +SKIP
    """
    if hasattr(source, "view") and callable(source.view):  # a live Run from graddoctor.watch
        return source.view()
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"load() takes a store path or a run from graddoctor.watch, got {type(source).__name__}.")
    store = RunStore(source, readonly=True)
    try:
        return read_run(store, store.find_run(name))
    finally:
        store.close()


def read_run(store: RunStore, run_id: int) -> RunView:
    """Load one run into memory; a file whose tables cannot be read raises StoreError."""
    try:
        return _read_run(store, run_id)
    except sqlite3.Error as err:
        raise StoreError(
            f"the run store {store.path!r} cannot be read ({err}): it may be damaged, or written by another "
            f"version of graddoctor's schema. Record into a new store file."
        ) from None


def _read_run(store: RunStore, run_id: int) -> RunView:
    con = store.con
    row = con.execute(
        "SELECT name, status, pid, host, config_json, env_json, error, first_nonfinite_json FROM runs WHERE run_id=?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise StoreError(f"no run with id {run_id} in {store.path!r}.")
    name, status, pid, host, config_json, env_json, error, nonfinite_json = row
    infos = tuple(
        LayerInfo(name, type_, kind, n_params, json.loads(shapes))
        for name, type_, kind, n_params, shapes in con.execute(
            "SELECT layer, type, kind, n_params, param_shapes FROM layers WHERE run_id=? ORDER BY position", (run_id,)
        )
    )
    step_rows = con.execute("SELECT step, wall_time FROM steps WHERE run_id=? ORDER BY step", (run_id,)).fetchall()
    steps = np.array([s for s, _ in step_rows], dtype=np.int64)
    col = {int(s): j for j, s in enumerate(steps)}
    stats: dict[str, np.ndarray] = {}
    recorded: dict[str, np.ndarray] = {}
    for step, pos, stat, value in con.execute("SELECT step, position, stat, value FROM stats WHERE run_id=?", (run_id,)):
        if step in col and pos < len(infos):
            if stat not in stats:
                stats[stat] = np.full((len(infos), len(steps)), np.nan)
                recorded[stat] = np.zeros((len(infos), len(steps)), dtype=bool)
            stats[stat][pos, col[step]] = np.nan if value is None else value
            recorded[stat][pos, col[step]] = True
    scalars: dict[str, np.ndarray] = {}
    scalar_recorded: dict[str, np.ndarray] = {}
    for step, key, value in con.execute("SELECT step, key, value FROM scalars WHERE run_id=?", (run_id,)):
        if step in col:
            scalars.setdefault(key, np.full(len(steps), np.nan))[col[step]] = np.nan if value is None else value
            scalar_recorded.setdefault(key, np.zeros(len(steps), dtype=bool))[col[step]] = True
    hists: dict[tuple[str, str], list] = {}
    for step, pos, kind, lo, hi, nonfinite, counts in con.execute(
        "SELECT step, position, kind, lo, hi, nonfinite, counts FROM hists WHERE run_id=? ORDER BY step", (run_id,)
    ):
        entry = (int(step), _num(lo), _num(hi), int(nonfinite), np.array(json.loads(counts), dtype=np.float64))
        hists.setdefault((infos[pos].name, kind), []).append(entry)
    return RunView(
        path=store.path, run_id=run_id, name=name, status=effective_status(status, pid, host),
        config=json.loads(config_json), env=json.loads(env_json), error=error,
        first_nonfinite=json.loads(nonfinite_json) if nonfinite_json else None,
        layer_info=infos, steps=steps, wall_time=np.array([t for _, t in step_rows]),
        _stats=stats, _recorded=recorded, _scalars=scalars, _scalar_recorded=scalar_recorded, _hists=hists,
        guard_actions=read_actions(con, run_id),
    )


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)
