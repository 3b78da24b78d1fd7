"""A v3 run's statistics and histograms, read from the file only when a reader asks for them.

`RunView` keeps `_stats`, `_recorded` and `_hists` as mappings; for a run read from a file these
are the mappings below. A whole matrix is read (and kept) when a reader asks for it; `series`,
`column` and `window` read only the segments they need and keep nothing. They read through their
own read-only connection, so a view outlives the `RunStore` it was made from; they only ever show
the steps the view was made with (a step written later is filtered out).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np

from . import segments
from .segments import BLOCK


RECENT_BYTES = 128 << 20  # reads kept (at 50k steps a block of one statistic is 64 x 50k values: 29 MB with its mask)


class SegmentSource:
    """One run's segments in one store file, read on demand through a private connection."""

    def __init__(self, path: str, run_id: int, steps: np.ndarray, n_layers: int, stat_ids: dict[str, int]) -> None:
        self.path = path
        self.run_id = run_id
        self.steps = steps
        self.n_layers = n_layers
        self.stat_ids = stat_ids
        self._con: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._matrices: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._scalars: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._scalar_keys: list[str] | None = None
        self._recent: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # the last few reads

    def _cached(self, key: tuple, read) -> tuple[np.ndarray, np.ndarray]:
        """`read()`, kept among the last reads, RECENT_BYTES at most (a table reads the same step per
        layer; a figure the same block of layers per statistic)."""
        with self._lock:
            if key in self._recent:
                self._recent.move_to_end(key)
                return self._recent[key]
            found = self._recent[key] = read()
            while len(self._recent) > 1 and sum(v.nbytes + r.nbytes for v, r in self._recent.values()) > RECENT_BYTES:
                self._recent.popitem(last=False)
            return found

    @property
    def con(self) -> sqlite3.Connection:
        if self._con is None:
            from .sqlite import RunStore  # the same validation and read-only opening as every reader

            self._con = RunStore(self.path, readonly=True).con
            weakref.finalize(self, self._con.close)
        return self._con

    def matrix(self, stat: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, recorded) [n_layers, n_steps] of `stat`, read once and kept."""
        with self._lock:
            if stat not in self._matrices:
                self._matrices[stat] = segments.read(self.con, self.run_id, self.stat_ids[stat], self.steps, self.n_layers)
            return self._matrices[stat]

    def series(self, stat: str, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, recorded) [n_steps] of `stat` at layer position i: one block's segments."""
        if stat in self._matrices:
            v, r = self._matrices[stat]
            return v[i].copy(), r[i].copy()
        v, r = self._cached((stat, "block", i // BLOCK), lambda: segments.read(
            self.con, self.run_id, self.stat_ids[stat], self.steps, self.n_layers, block=i // BLOCK))
        return v[i % BLOCK].copy(), r[i % BLOCK].copy()

    def window(self, stat: str, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, recorded) [n_layers, len(cols)] of `stat` at the given columns (ascending)."""
        if stat in self._matrices:
            v, r = self._matrices[stat]
            return v[:, cols], r[:, cols]
        wanted = self.steps[cols]
        if len(wanted) == 0:
            return np.full((self.n_layers, 0), np.nan), np.zeros((self.n_layers, 0), dtype=bool)
        if len(cols) > 64:
            with self._lock:
                return self._window(stat, wanted)
        return self._cached((stat, "cols", tuple(cols.tolist())), lambda: self._window(stat, wanted))

    def _window(self, stat: str, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return segments.read(self.con, self.run_id, self.stat_ids[stat], wanted, self.n_layers,
                             steps=(int(wanted[0]), int(wanted[-1])))

    def scalar_keys(self) -> list[str]:
        """The run's scalar keys, found by walking the (run, key, step) primary key: a few lookups, no scan."""
        with self._lock:
            if self._scalar_keys is None:
                keys, last = [], None
                with segments.reading():
                    while True:
                        sql = "SELECT MIN(key) FROM scalars WHERE run_id=?" + ("" if last is None else " AND key>?")
                        last = self.con.execute(sql, (self.run_id,) if last is None else (self.run_id, last)).fetchone()[0]
                        if last is None:
                            break
                        keys.append(last)
                    # rows exist at recorded steps only; a key first logged after the view's last step is not shown
                    top = int(self.steps[-1]) if len(self.steps) else None
                    keys = [k for k in keys if top is not None and self.con.execute(
                        "SELECT 1 FROM scalars WHERE run_id=? AND key=? AND step<=? LIMIT 1", (self.run_id, k, top)
                    ).fetchone() is not None]
                self._scalar_keys = keys
            return self._scalar_keys

    def scalar(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, recorded) [n_steps] of one scalar key, read once and kept (a few bytes per step)."""
        with self._lock:
            if key not in self._scalars:
                with segments.reading():
                    rows = self.con.execute("SELECT step, value FROM scalars WHERE run_id=? AND key=? ORDER BY step",
                                            (self.run_id, key)).fetchall()
                    self._scalars[key] = scalar_columns(rows, self.steps)
            return self._scalars[key]

    def hists(self, position: int, kind: str) -> list[tuple[int, float, float, int, np.ndarray]]:
        with self._lock, segments.reading():
            rows = self.con.execute(
                "SELECT step, lo, hi, nonfinite, counts FROM hists WHERE run_id=? AND position=? AND kind=? ORDER BY step",
                (self.run_id, position, kind),
            ).fetchall()
            known = set(self.steps.tolist())
            return [(int(step), _num(lo), _num(hi), int(nf), np.array(json.loads(c), dtype=np.float64))
                    for step, lo, hi, nf, c in rows if step in known]


class LazyMatrices(Mapping):
    """stat -> [n_layers, n_steps] values (or recorded masks, `part=1`), read on first access."""

    def __init__(self, source: SegmentSource, part: int) -> None:
        self.source = source
        self.part = part

    def __getitem__(self, stat: str) -> np.ndarray:
        if stat not in self.source.stat_ids:
            raise KeyError(stat)
        return self.source.matrix(stat)[self.part]

    def __iter__(self) -> Iterator[str]:
        return iter(self.source.stat_ids)

    def __len__(self) -> int:
        return len(self.source.stat_ids)

    def __contains__(self, stat: object) -> bool:
        return stat in self.source.stat_ids


class LazyScalars(Mapping):
    """key -> [n_steps] scalar values (or recorded masks, `part=1`), read on first access."""

    def __init__(self, source: SegmentSource, part: int) -> None:
        self.source = source
        self.part = part

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.source.scalar_keys():
            raise KeyError(key)
        return self.source.scalar(key)[self.part]

    def __iter__(self) -> Iterator[str]:
        return iter(self.source.scalar_keys())

    def __len__(self) -> int:
        return len(self.source.scalar_keys())

    def __contains__(self, key: object) -> bool:
        return key in self.source.scalar_keys()


def scalar_columns(rows: list[tuple[int, float | None]], steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values NaN where absent, recorded) [len(steps)] of (step, value) rows; NULL reads NaN, other steps are left out."""
    values, recorded = np.full(len(steps), np.nan), np.zeros(len(steps), dtype=bool)
    if not rows or len(steps) == 0:
        return values, recorded
    at = np.array([r[0] for r in rows], dtype=np.int64)
    got = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
    cols = np.minimum(np.searchsorted(steps, at), len(steps) - 1)
    keep = steps[cols] == at
    values[cols[keep]] = got[keep]
    recorded[cols[keep]] = True
    return values, recorded


class LazyHists(Mapping):
    """(layer name, kind) -> histograms of that layer, read on first access (not kept)."""

    def __init__(self, source: SegmentSource, names: list[str]) -> None:
        self.source = source
        self.position = {name: i for i, name in enumerate(names)}

    def __getitem__(self, key: tuple[str, str]) -> list:
        layer, kind = key
        if layer not in self.position:
            raise KeyError(key)
        found = self.source.hists(self.position[layer], kind)
        if not found:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[tuple[str, str]]:
        rows = self.source.con.execute("SELECT DISTINCT position, kind FROM hists WHERE run_id=?", (self.source.run_id,))
        names = {i: name for name, i in self.position.items()}
        return iter([(names[p], k) for p, k in rows if p in names])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)
