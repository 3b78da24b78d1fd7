"""RunView: one recorded run, read back as numpy arrays. Readers never see tensors or modules."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from typing import Any

import numpy as np

from ..config import Role
from ..errors import ConfigError, NotFoundError, StoreError
from .._validate import check_path, check_str
from . import segments
from .lazy import LazyHists, LazyMatrices, LazyScalars, SegmentSource, scalar_columns
from .sqlite import MEMORY, RunStore, effective_status
from .time_series import TimeRecord, read_time_stats
from .integrity import damaged
from .roles import stored_role
from .guard_actions import GuardAction, read_actions
from .gaps import Gap, read_gaps


@dataclasses.dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    kind: str      # 'param', 'activation' or 'attention' (what the probes read)
    n_params: int
    param_shapes: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # {'weight': [out, in], ...}
    role: Role | str | None = None  # what the layer is (a config.Role after init); None: derived by name

    def __post_init__(self) -> None:
        # stored as watch decided it; for a row without one (v1, or the column's default) by name
        object.__setattr__(self, "role", stored_role(self.type, self.kind, self.role))


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
    _time: dict[tuple[int, str], list[TimeRecord]] = dataclasses.field(default_factory=dict)  # time_stats rows
    gaps: tuple[Gap, ...] = ()  # recorded steps the writer dropped while the store could not be written (store.gaps)

    @property
    def dropped_steps(self) -> int:
        """Recorded steps missing from the store because it could not be written (disk full, a lock...)."""
        return sum(g.n_steps for g in self.gaps)

    def time_layers(self, stat: str = "in_grad_norm_t") -> list[str]:
        """Layers with a per-time-step series `stat` (recurrent layers), input side first."""
        return [self.layer_info[p].name for p in sorted({p for p, s in self._time if s == stat})]

    def time_records(self, stat: str, layer: str) -> list[TimeRecord]:
        """Every stored record of a vector statistic (docs/through-time.md), in step order."""
        return list(self._time.get((self._layer_index(layer), stat), []))

    def time_stat(self, stat: str, layer: str) -> tuple[np.ndarray, tuple]:
        """(values [n_steps, n_buckets] aligned with `steps`, bucket edges or labels) of a vector statistic.

        Rows are NaN at steps where it was not recorded, or recorded with other edges (another
        sequence length) than the last record's. ([n_steps, 0], ()) when never recorded.
        """
        records = self.time_records(stat, layer)
        if not records:
            return np.full((len(self.steps), 0), np.nan), ()
        index = records[-1].index
        out = np.full((len(self.steps), len(records[-1].values)), np.nan)
        col = {int(s): j for j, s in enumerate(self.steps)}
        for r in records:
            if r.index == index and r.step in col:
                out[col[r.step]] = r.values
        return out, index

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
        if isinstance(self._stats, LazyMatrices):  # one block's segments, not the whole matrix
            return self._stats.source.series(stat, i)[0]
        return self._stats[stat][i].copy()

    def stat_matrix(self, stat: str, *, copy: bool = True) -> np.ndarray:
        """[n_layers, n_steps] array of `stat` (NaN where not recorded).

        `copy=False` returns the view's own array, read-only (no copy: readers that only look).
        """
        if stat not in self._stats:
            return _shared(np.full((len(self.layer_info), len(self.steps)), np.nan), copy)
        return _shared(self._stats[stat], copy)

    def stat_window(self, stat: str, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([n_layers, len(cols)] values, recorded mask) of `stat` at the columns `cols` (ascending),
        reading only the segments that hold them."""
        cols = np.asarray(cols, dtype=np.int64)
        if stat not in self._stats:
            return np.full((len(self.layer_info), len(cols)), np.nan), np.zeros((len(self.layer_info), len(cols)), bool)
        if isinstance(self._stats, LazyMatrices):
            return self._stats.source.window(stat, cols)
        return self._stats[stat][:, cols].copy(), self._recorded[stat][:, cols].copy()

    def recorded(self, stat: str, *, copy: bool = True) -> np.ndarray:
        """[n_layers, n_steps] bool: True where a value of `stat` was recorded (it may be NaN).

        `copy=False` returns the view's own array, read-only.
        """
        if stat not in self._recorded:
            return _shared(np.zeros((len(self.layer_info), len(self.steps)), dtype=bool), copy)
        return _shared(self._recorded[stat], copy)

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
            raise NotFoundError(f"no scalar {key!r} in run {self.name!r}; it has: {', '.join(self.scalars) or 'none'}.")
        return self._scalars[key].copy()

    def hist(self, layer: str, kind: str = "act") -> list[tuple[int, float, float, int, np.ndarray]]:
        """Histograms of `layer` ('act' or 'grad'): (step, lo, hi, nonfinite, counts[64]) per step."""
        self._layer_index(layer)
        return list(self._hists.get((layer, kind), []))

    def row(self, layer: str, step: int | None = None) -> dict[str, float]:
        """Every statistic recorded for `layer` at `step` (default: the last recorded step)."""
        i = self._layer_index(layer)
        col = self.step_index(step)
        if isinstance(self._stats, LazyMatrices):  # the segments holding that step only
            cells = {s: self._stats.source.window(s, np.array([col])) for s in self.stats}
            return {s: float(v[i, 0]) for s, (v, r) in cells.items() if r[i, 0]}
        return {s: float(self._stats[s][i, col]) for s in self.stats if self._recorded[s][i, col]}

    def step_index(self, step: int | None = None) -> int:
        """Column of `step` in the arrays (default: the last one); KeyError if it was not recorded."""
        if len(self.steps) == 0:
            raise NotFoundError(f"run {self.name!r} has no recorded step yet.")
        if step is None:
            return len(self.steps) - 1
        hits = np.flatnonzero(self.steps == step)
        if hits.size == 0:
            raise NotFoundError(
                f"step {step} was not recorded in run {self.name!r}; recorded steps run from "
                f"{int(self.steps[0])} to {int(self.steps[-1])} ({len(self.steps)} of them)."
            )
        return int(hits[0])

    def latest(self, layer: str) -> dict[str, float]:
        """The last recorded value of every statistic of `layer` (a recorded NaN stays NaN)."""
        i = self._layer_index(layer)
        out = {}
        for stat in self.stats:
            if isinstance(self._stats, LazyMatrices):
                values, recorded = self._stats.source.series(stat, i)
                present = np.flatnonzero(recorded)
                if present.size:
                    out[stat] = float(values[present[-1]])
                continue
            present = np.flatnonzero(self._recorded[stat][i])
            if present.size:
                out[stat] = float(self._stats[stat][i, present[-1]])
        return out

    def _layer_index(self, layer: str) -> int:
        for i, info in enumerate(self.layer_info):
            if info.name == layer:
                return i
        raise NotFoundError(f"no layer {layer!r} in run {self.name!r}; its layers are: {', '.join(self.layers)}.")

    def __repr__(self) -> str:
        return (
            f"RunView(name={self.name!r}, status={self.status!r}, layers={len(self.layer_info)}, "
            f"steps={len(self.steps)}, stats={self.stats})"
        )


def _shared(array: np.ndarray, copy: bool) -> np.ndarray:
    if copy:
        return array.copy()
    out = array.view()
    out.flags.writeable = False
    return out


def load(source: Any, name: str | None = None) -> RunView:
    """Read a run: from a store path (the latest run, or the latest called `name`) or a live run.

    Example:
        >>> r = graddoctor.load("runs.db", name="exp1")       # doctest: +SKIP
    """
    if hasattr(source, "view") and callable(source.view):  # a live Run from graddoctor.watch
        return source.view()
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"load() takes a store path or a run from graddoctor.watch, got {type(source).__name__}.")
    check_path("load(source)", source)
    check_str("name", name, optional=True)
    store = RunStore(source, readonly=True)
    try:
        return read_run(store, store.find_run(name))
    finally:
        store.close()


def read_run(store: RunStore, run_id: int) -> RunView:
    """Load one run into memory; a file whose tables cannot be read raises StoreError."""
    try:
        return _read_run(store, run_id)
    except (sqlite3.Error, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError) as err:
        # bad pages, a missing table, a run row whose JSON does not parse, a position past the layers
        raise damaged(store.path, f"cannot be read ({type(err).__name__}: {err})") from None


def _read_run(store: RunStore, run_id: int) -> RunView:
    con = store.con
    row = con.execute(
        "SELECT name, status, pid, host, config_json, env_json, error, first_nonfinite_json FROM runs WHERE run_id=?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise StoreError(f"no run with id {run_id} in {store.path!r}.")
    name, status, pid, host, config_json, env_json, error, nonfinite_json = row
    role = "role" if store.version >= 2 else "NULL"  # version 1 has no role column: derived by name
    infos = tuple(
        LayerInfo(name, type_, kind, n_params, json.loads(shapes), role)
        for name, type_, kind, n_params, shapes, role in con.execute(
            f"SELECT layer, type, kind, n_params, param_shapes, {role} FROM layers WHERE run_id=? ORDER BY position",
            (run_id,),
        )
    )
    step_rows = con.execute("SELECT step, wall_time FROM steps WHERE run_id=? ORDER BY step", (run_id,)).fetchall()
    steps = np.array([s for s, _ in step_rows], dtype=np.int64)
    wall_time = np.array([t for _, t in step_rows], dtype=np.float64)
    scalars: Any = None
    scalar_recorded: Any = None
    if store.version < 3:
        stats, recorded = _read_stat_rows(con, run_id, steps, len(infos))
        hists = _read_hists(con, run_id, infos, steps)
    elif store.readonly and store.path != MEMORY:  # a file: read what readers ask for, when they ask
        top = con.execute("SELECT max(position) FROM hists WHERE run_id=?", (run_id,)).fetchone()[0]
        if top is not None and not (isinstance(top, int) and 0 <= top < len(infos)):
            raise damaged(store.path, f"has a histogram at layer position {top!r} of a run with {len(infos)} layers")
        source = SegmentSource(store.path, run_id, steps, len(infos), segments.stat_names(con, run_id))
        stats, recorded = LazyMatrices(source, 0), LazyMatrices(source, 1)
        hists = LazyHists(source, [info.name for info in infos])
        scalars, scalar_recorded = LazyScalars(source, 0), LazyScalars(source, 1)
    else:  # the live run's own connection: read now, while it is consistent
        stats, recorded = {}, {}
        for stat, stat_id in segments.stat_names(con, run_id).items():
            stats[stat], recorded[stat] = segments.read(con, run_id, stat_id, steps, len(infos))
        hists = _read_hists(con, run_id, infos, steps)
    if scalars is None:
        scalars, scalar_recorded = _read_scalars(con, run_id, steps)
    return RunView(
        path=store.path, run_id=run_id, name=name, status=effective_status(status, pid, host),
        config=json.loads(config_json), env=json.loads(env_json), error=error,
        first_nonfinite=json.loads(nonfinite_json) if nonfinite_json else None,
        layer_info=infos, steps=steps, wall_time=wall_time,
        _stats=stats, _recorded=recorded, _scalars=scalars, _scalar_recorded=scalar_recorded, _hists=hists,
        _time={k: v for k, v in read_time_stats(con, run_id).items() if k[0] < len(infos)},
        guard_actions=read_actions(con, run_id), gaps=read_gaps(con, run_id),
    )


def _read_scalars(con: sqlite3.Connection, run_id: int, steps: np.ndarray) -> tuple[dict, dict]:
    """Every scalar key's (values, recorded), read at once (stores read eagerly)."""
    by_key: dict[str, list[tuple[int, float | None]]] = {}
    for step, key, value in con.execute("SELECT step, key, value FROM scalars WHERE run_id=? ORDER BY key, step",
                                        (run_id,)):
        by_key.setdefault(key, []).append((step, value))
    scalars: dict[str, np.ndarray] = {}
    scalar_recorded: dict[str, np.ndarray] = {}
    for key, rows in by_key.items():
        values, recorded = scalar_columns(rows, steps)
        if recorded.any():  # a key logged only at steps the view does not hold is not one of its scalars
            scalars[key], scalar_recorded[key] = values, recorded
    return scalars, scalar_recorded


def _read_stat_rows(con: sqlite3.Connection, run_id: int, steps: np.ndarray, n_layers: int) -> tuple[dict, dict]:
    """Schema versions 1 and 2: one row per value, read all at once."""
    col = {int(s): j for j, s in enumerate(steps)}
    stats: dict[str, np.ndarray] = {}
    recorded: dict[str, np.ndarray] = {}
    for step, pos, stat, value in con.execute("SELECT step, position, stat, value FROM stats WHERE run_id=?", (run_id,)):
        if step in col and pos < n_layers:
            if stat not in stats:
                stats[stat] = np.full((n_layers, len(steps)), np.nan)
                recorded[stat] = np.zeros((n_layers, len(steps)), dtype=bool)
            stats[stat][pos, col[step]] = np.nan if value is None else value
            recorded[stat][pos, col[step]] = True
    return stats, recorded


def _read_hists(con: sqlite3.Connection, run_id: int, infos: tuple[LayerInfo, ...], steps: np.ndarray) -> dict:
    known = set(steps.tolist())
    hists: dict[tuple[str, str], list] = {}
    for step, pos, kind, lo, hi, nonfinite, counts in con.execute(
        "SELECT step, position, kind, lo, hi, nonfinite, counts FROM hists WHERE run_id=? ORDER BY step", (run_id,)
    ):
        if step in known and pos < len(infos):
            entry = (int(step), _num(lo), _num(hi), int(nonfinite), np.array(json.loads(counts), dtype=np.float64))
            hists.setdefault((infos[pos].name, kind), []).append(entry)
    return hists


def _num(value: float | None) -> float:
    return float("nan") if value is None else float(value)
