"""The `guard_actions` table: every action a guard took, with its step and reason.

Additive: created the first time a guard acts (CREATE TABLE IF NOT EXISTS), so stores written
without a guard, or by an older graddoctor, have no such table, which reads as "no actions".
The schema version (PRAGMA user_version) does not change.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any, Iterable

DDL = """
CREATE TABLE IF NOT EXISTS guard_actions (
    run_id   INTEGER NOT NULL,
    step     INTEGER NOT NULL,            -- the optimizer step the action is about
    action   TEXT NOT NULL,               -- warn | skip | stop | callback
    trigger  TEXT NOT NULL,               -- nonfinite, grad_spike, large_updates, dead_layers, consecutive_skips, ...
    layer    TEXT,                        -- the layer named, NULL for the whole model
    reason   TEXT NOT NULL,
    evidence_json TEXT NOT NULL           -- the numbers behind it
);
CREATE INDEX IF NOT EXISTS guard_actions_by_run ON guard_actions(run_id, step);
"""

GuardRow = tuple[int, str, str, "str | None", str, str]


@dataclasses.dataclass(frozen=True)
class GuardAction:
    step: int
    action: str
    trigger: str
    layer: str | None
    reason: str
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_actions(con: sqlite3.Connection, run_id: int, rows: Iterable[GuardRow]) -> None:
    """Insert rows inside the caller's transaction; creates the table on first use."""
    rows = list(rows)
    if not rows:
        return
    for statement in DDL.split(";"):
        if statement.strip():
            con.execute(statement)
    con.executemany("INSERT INTO guard_actions VALUES (?, ?, ?, ?, ?, ?, ?)", [(run_id, *row) for row in rows])


def read_actions(con: sqlite3.Connection, run_id: int) -> tuple[GuardAction, ...]:
    """The run's guard actions in the order they were taken; () when the table does not exist."""
    exists = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='guard_actions'").fetchone()
    if not exists:
        return ()
    return tuple(
        GuardAction(int(step), action, trigger, layer, reason, json.loads(evidence))
        for step, action, trigger, layer, reason, evidence in con.execute(
            "SELECT step, action, trigger, layer, reason, evidence_json FROM guard_actions WHERE run_id=? ORDER BY rowid",
            (run_id,),
        )
    )
