"""`migrate(path)`: rewrite a version 1 or 2 store as version 3, in place and crash-safely.

The new store is written beside the old one (PATH.migrating), flushed to the disk (fsync), and
renamed over PATH in one atomic step; killed at any moment before the rename, PATH is the old
store, intact, and the next `migrate` starts again. While it copies, it holds the old store's
exclusive lock (the old store is switched from WAL to a rollback journal first: no -wal file is
left to be mistaken for the new store's), so nothing can write to it in between; it refuses a
store with a run still recording. Tables it does not know (added by later versions' additive
tables) are copied as they are.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from . import segments
from .roles import stored_role
from .schema import APPLICATION_ID, DDL, SCHEMA_VERSION
from .sqlite import _read_header, _validate, effective_status

KNOWN = ("runs", "layers", "steps", "stats", "scalars", "hists")


def migrate(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Rewrite the store at `path` as schema version 3; returns {from_version, to_version, runs, values}.

    A version 3 store is left as it is. Raises StoreError for a file that is not a graddoctor
    store (untouched), a store from a newer graddoctor, or a store in use (a run still recording,
    or another program holding it open).
    """
    path = Path(path)
    _validate(path, readonly=True)
    version = _read_header(path)[1]
    if version >= SCHEMA_VERSION:
        return {"from_version": version, "to_version": version, "runs": 0, "values": 0}
    tmp = path.with_name(path.name + ".migrating")
    _remove(tmp)
    old = _lock(path)
    try:
        new = sqlite3.connect(tmp)
        try:
            counts = _copy(old, new, version)
            new.commit()
        finally:
            new.close()
        _fsync(tmp)
        os.replace(tmp, path)  # atomic: PATH is the old store or the whole new one
        _fsync(path.parent)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        old.close()
    return {"from_version": version, "to_version": SCHEMA_VERSION, **counts}


def _lock(path: Path) -> sqlite3.Connection:
    """The old store, in rollback-journal mode, under an exclusive lock (nobody else reads or writes)."""
    con = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    try:
        running = [name for name, status, pid, host in con.execute("SELECT name, status, pid, host FROM runs")
                   if effective_status(status, pid, host) == "running"]
        if running:
            raise StoreError(
                f"the run store {str(path)!r} has runs still recording ({', '.join(sorted(set(running)))}): "
                f"migrate it when they have finished (it was left untouched)."
            )
        if con.execute("PRAGMA journal_mode=DELETE").fetchone()[0] != "delete":
            raise sqlite3.OperationalError("database is locked")
        con.execute("BEGIN EXCLUSIVE")
    except sqlite3.Error as err:
        con.close()
        raise StoreError(
            f"cannot migrate the run store {str(path)!r}: {err}. Close the programs that have it open "
            f"(a training run, graddoctor report --follow) and run graddoctor migrate again."
        ) from None
    except BaseException:
        con.close()
        raise
    return con


def _copy(old: sqlite3.Connection, new: sqlite3.Connection, version: int) -> dict[str, int]:
    new.execute("PRAGMA journal_mode=OFF")  # a throwaway file until the rename: no journal needed
    new.execute("PRAGMA synchronous=OFF")   # _fsync makes it durable once, before the rename
    new.executescript(f"{DDL} PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version={SCHEMA_VERSION};")
    for table in ("runs", "steps", "scalars", "hists"):
        _copy_table(old, new, table)
    role = "role" if version >= 2 else "NULL"
    new.executemany(  # a layer stored without a role gets it by name (store.roles), as a reader would see it
        "INSERT INTO layers (run_id, position, layer, type, kind, n_params, param_shapes, role) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ((*row[:7], stored_role(row[3], row[4], row[7]).value) for row in
         old.execute(f"SELECT run_id, position, layer, type, kind, n_params, param_shapes, {role} FROM layers")),
    )
    _copy_unknown_tables(old, new)
    values = 0
    run_ids = [r for (r,) in old.execute("SELECT run_id FROM runs ORDER BY run_id")]
    for run_id in run_ids:
        values += _copy_stats(old, new, run_id)
    return {"runs": len(run_ids), "values": values}


def _copy_table(old: sqlite3.Connection, new: sqlite3.Connection, table: str) -> None:
    columns = [row[1] for row in old.execute(f"PRAGMA table_info({table})")]
    names = ", ".join(columns)
    new.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})",
                    old.execute(f"SELECT {names} FROM {table}"))


def _copy_unknown_tables(old: sqlite3.Connection, new: sqlite3.Connection) -> None:
    """Tables (and their indexes) another version added: copied as they are."""
    rows = old.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                       "AND name NOT LIKE 'sqlite_%' ORDER BY type = 'index'").fetchall()
    for type_, name, table, sql in rows:
        if table in KNOWN:
            continue
        new.execute(sql)
        if type_ == "table":
            _copy_table(old, new, name)


def _copy_stats(old: sqlite3.Connection, new: sqlite3.Connection, run_id: int) -> int:
    """One run's rows as segments of segments.CHUNK steps x 64 layers, one (statistic, block) at a time."""
    steps = np.array([s for (s,) in old.execute("SELECT step FROM steps WHERE run_id=? ORDER BY step", (run_id,))],
                     dtype=np.int64)
    n_layers = old.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM layers WHERE run_id=?", (run_id,)).fetchone()[0]
    names = sorted(s for (s,) in old.execute("SELECT DISTINCT stat FROM stats WHERE run_id=?", (run_id,)))
    ids = segments.stat_ids(new, names) if names else {}
    col = {int(s): j for j, s in enumerate(steps)}
    count = 0
    for name in names:
        for start in range(0, n_layers, segments.BLOCK):
            rows = range(start, min(start + segments.BLOCK, n_layers))
            values = np.full((len(rows), len(steps)), np.nan)
            recorded = np.zeros((len(rows), len(steps)), dtype=bool)
            for r, pos in enumerate(rows):
                for step, value in old.execute(
                    "SELECT step, value FROM stats WHERE run_id=? AND position=? AND stat=?", (run_id, pos, name)
                ):
                    j = col.get(step)
                    if j is not None:
                        values[r, j] = np.nan if value is None else value
                        recorded[r, j] = True
            count += int(recorded.sum())
            segments.insert(new, segments.segment_rows(run_id, ids[name], name, start // segments.BLOCK, steps,
                                                       values, recorded, segments.CHUNK))
    return count


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(tmp: Path) -> None:
    for p in (tmp, tmp.with_name(tmp.name + "-journal")):
        if p.exists():
            p.unlink()
