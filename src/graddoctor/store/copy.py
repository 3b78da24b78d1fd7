"""Copy one run from a store into another: how the shards of a distributed sweep reach the study's store.

Both stores are version 3. The run gets a new id in the target; every table keyed by `run_id`
(layers, steps, segments, scalars, hists, and the additive time_stats and guard_actions) is
copied with it, the statistic ids of the segments mapped by name, all in one transaction, so the
target holds the whole run or none of it.
"""

from __future__ import annotations

import os
import sqlite3

from ..errors import StoreError
from .schema import SCHEMA_VERSION
from .sqlite import RunStore

_OWN = ("runs", "segments", "stats")  # copied by hand below; every other table with a run_id column generically


def copy_run(source: str | os.PathLike[str], run_id: int, target: RunStore) -> int:
    """Copy run `run_id` of the store file `source` into `target`; return its id there."""
    con = target.con
    con.execute("ATTACH DATABASE ? AS src", (os.fspath(source),))
    try:
        version = con.execute("PRAGMA src.user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise StoreError(f"copy_run: {os.fspath(source)!r} is a version {version} store; expected {SCHEMA_VERSION}.")
        with con:  # one transaction
            new = _copy_runs_row(con, run_id)
            _copy_segments(con, run_id, new)
            for table in _tables_with_run_id(con):
                _copy_table(con, table, run_id, new)
        return new
    finally:
        con.execute("DETACH DATABASE src")


def _columns(con: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [row[1] for row in con.execute(f"PRAGMA {schema}.table_info({table})")]


def _copy_runs_row(con: sqlite3.Connection, run_id: int) -> int:
    cols = [c for c in _columns(con, "src", "runs") if c != "run_id" and c in _columns(con, "main", "runs")]
    names = ", ".join(cols)
    cur = con.execute(f"INSERT INTO main.runs ({names}) SELECT {names} FROM src.runs WHERE run_id = ?", (run_id,))
    if cur.rowcount != 1:
        raise StoreError(f"copy_run: no run {run_id} in the source store.")
    return int(cur.lastrowid)


def _copy_segments(con: sqlite3.Connection, run_id: int, new: int) -> None:
    con.execute("INSERT OR IGNORE INTO main.stats (name) SELECT s.name FROM src.stats s "
                "WHERE s.stat_id IN (SELECT stat_id FROM src.segments WHERE run_id = ?)", (run_id,))
    cols = [c for c in _columns(con, "src", "segments") if c not in ("seg_id", "run_id", "stat_id")]
    names = ", ".join(cols)
    picked = ", ".join(f"g.{c}" for c in cols)
    con.execute(
        f"INSERT INTO main.segments (run_id, stat_id, {names}) "
        f"SELECT ?, t.stat_id, {picked} FROM src.segments g JOIN src.stats s ON s.stat_id = g.stat_id "
        f"JOIN main.stats t ON t.name = s.name WHERE g.run_id = ? ORDER BY g.seg_id",  # write order kept
        (new, run_id),
    )


def _tables_with_run_id(con: sqlite3.Connection) -> list[str]:
    tables = [row[0] for row in con.execute("SELECT name FROM src.sqlite_master WHERE type = 'table'")]
    return [t for t in tables if t not in _OWN and "run_id" in _columns(con, "src", t)]


def _copy_table(con: sqlite3.Connection, table: str, run_id: int, new: int) -> None:
    if not _columns(con, "main", table):  # an additive table the target has not needed yet: same definition
        (sql,) = con.execute("SELECT sql FROM src.sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        con.execute(sql)
        for (index_sql,) in con.execute("SELECT sql FROM src.sqlite_master WHERE type = 'index' AND tbl_name = ? "
                                        "AND sql IS NOT NULL", (table,)).fetchall():
            con.execute(index_sql)
    cols = [c for c in _columns(con, "src", table) if c != "run_id"]
    names = ", ".join(cols)
    con.execute(f"INSERT INTO main.{table} (run_id, {names}) SELECT ?, {names} FROM src.{table} WHERE run_id = ?",
                (new, run_id))
