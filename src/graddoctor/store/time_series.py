"""The `time_stats` table: vector-valued series per (run, step, layer, stat) (docs/through-time.md).

Recurrent layers' per-time-step gradient norms (`in_grad_norm_t`, `out_grad_norm_t`: one value per
bucket of time steps, `index_json` the bucket edges) and the Pascanu bound's numbers per recurrent
weight block (`hh_radius`, `hh_sigma_max`, `hh_gamma`: `index_json` the block labels). Additive:
created with CREATE TABLE IF NOT EXISTS, no schema version of its own; a store written before it
existed reads as "not recorded".
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import numpy as np

TIME_DDL = """
CREATE TABLE IF NOT EXISTS time_stats (
    run_id     INTEGER NOT NULL,
    step       INTEGER NOT NULL,
    position   INTEGER NOT NULL,          -- layers.position
    stat       TEXT NOT NULL,             -- in_grad_norm_t, out_grad_norm_t, hh_radius, hh_sigma_max, hh_gamma
    length     INTEGER NOT NULL,          -- time steps T of the sequence (or number of blocks)
    index_json TEXT NOT NULL,             -- bucket edges [0, ..., T] (bucket b: e_b <= t < e_b+1), or block labels
    value      BLOB NOT NULL,             -- float32 little-endian, one per bucket (or block)
    PRIMARY KEY (run_id, position, stat, step)
) WITHOUT ROWID
"""


@dataclasses.dataclass(frozen=True)
class TimeRecord:
    step: int
    length: int
    index: tuple            # bucket edges (ints) or block labels (strings)
    values: np.ndarray      # float32 -> float64


def read_time_stats(con: sqlite3.Connection, run_id: int) -> dict[tuple[int, str], list[TimeRecord]]:
    """{(layer position, stat): records in step order}; {} for a store without the table."""
    has = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='time_stats'").fetchone()
    if has is None:
        return {}
    out: dict[tuple[int, str], list[TimeRecord]] = {}
    for step, pos, stat, length, index, blob in con.execute(
        "SELECT step, position, stat, length, index_json, value FROM time_stats WHERE run_id=? ORDER BY step", (run_id,)
    ):
        values = np.frombuffer(blob, dtype="<f4").astype(np.float64)
        out.setdefault((int(pos), stat), []).append(TimeRecord(int(step), int(length), tuple(json.loads(index)), values))
    return out
