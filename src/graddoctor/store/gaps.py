"""The `gaps` table: recorded steps the writer dropped because the store could not be written.

A storage fault (disk full, a file-size limit, a lock held past the busy timeout) keeps the
unwritten rows in a bounded buffer; past its bound the oldest are dropped, and the writer records
here which steps went missing and why, as soon as it can write again (store/writer.py).

Additive, like `guard_actions`: created by the first gap (CREATE TABLE IF NOT EXISTS), so a store
that never had one has no such table, which reads as "no gaps". The schema version does not change.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Iterable

DDL = """
CREATE TABLE IF NOT EXISTS gaps (
    run_id     INTEGER NOT NULL,
    first_step INTEGER NOT NULL,          -- the first recorded step dropped
    last_step  INTEGER NOT NULL,          -- the last one (inclusive)
    n_steps    INTEGER NOT NULL,          -- recorded steps dropped in between (every > 1: fewer than the range)
    reason     TEXT NOT NULL              -- disk full | file-size limit ... | database locked ... (with SQLite's message)
)
"""


@dataclasses.dataclass(frozen=True)
class Gap:
    """Recorded steps first_step..last_step (n_steps of them) that are not in the store, and why."""

    first_step: int
    last_step: int
    n_steps: int
    reason: str

    def __str__(self) -> str:
        where = f"step {self.first_step}" if self.first_step == self.last_step else \
            f"steps {self.first_step}-{self.last_step}"
        return f"{where} not stored ({self.n_steps} recorded step{'s' * (self.n_steps != 1)}): {self.reason}"


def write_gaps(con: sqlite3.Connection, run_id: int, gaps: Iterable[Gap]) -> None:
    """Insert inside the caller's transaction; creates the table on first use."""
    rows = [(run_id, g.first_step, g.last_step, g.n_steps, g.reason) for g in gaps]
    if rows:
        con.execute(DDL)
        con.executemany("INSERT INTO gaps VALUES (?, ?, ?, ?, ?)", rows)


def read_gaps(con: sqlite3.Connection, run_id: int) -> tuple[Gap, ...]:
    """The run's gaps, oldest first; () when the table does not exist."""
    if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='gaps'").fetchone():
        return ()
    return tuple(Gap(int(a), int(b), int(n), str(why)) for a, b, n, why in con.execute(
        "SELECT first_step, last_step, n_steps, reason FROM gaps WHERE run_id=? ORDER BY rowid", (run_id,)))


def describe(gaps: Iterable[Gap]) -> str:
    """One sentence for a run's `error` field and the diagnosis notes."""
    return "; ".join(str(g) for g in gaps)
