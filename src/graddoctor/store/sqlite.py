"""RunStore: open/validate a store file, create and finish runs, write batches, read runs back."""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import StoreError
from . import segments
from . import integrity
from .gaps import Gap, write_gaps
from .guard_actions import write_actions
from .schema import APPLICATION_ID, DDL, SCHEMA_VERSION
from .segments import StepStats
from .time_series import TIME_DDL

MEMORY = ":memory:"

StatRow = tuple[int, int, str, float]          # step, position, stat, value
ScalarRow = tuple[int, str, float]             # step, key, value
HistRow = tuple[int, int, str, float, float, int, str]  # step, position, kind, lo, hi, nonfinite, counts


def _nan_to_null(value: float) -> float | None:
    return None if math.isnan(value) else value


class RunStore:
    """One SQLite file holding many runs (WAL mode: one writer, concurrent readers).

    Opening validates the file first, read-only: a file that is not a graddoctor store raises
    `StoreError` and is never modified.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        if self.path != MEMORY:
            _validate(Path(self.path), readonly=readonly)
            if Path(self.path).exists() and Path(self.path).stat().st_size > 0:
                integrity.check_file(Path(self.path)) if readonly else integrity.check_before_append(Path(self.path))
        self.con = self._connect()
        self.version = self.con.execute("PRAGMA user_version").fetchone()[0]  # 1 and 2: one row per value
        if readonly:
            integrity.check_schema(self.con, self.path)

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                uri = integrity.read_only_uri(Path(self.path))
                try:
                    con = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False)
                    con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opening is lazy: read now
                except sqlite3.Error as err:
                    raise integrity.cannot_open(Path(self.path), err) from None
            else:
                con = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
                if con.execute("PRAGMA user_version").fetchone()[0] == 0:
                    # Still in rollback-journal mode: the header fields land in the main file.
                    con.executescript(
                        f"BEGIN; {DDL} PRAGMA application_id={APPLICATION_ID}; "
                        f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                    )
                con.execute(TIME_DDL)  # additive, no version bump: an older store gains it on first write
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a process kill
        except sqlite3.Error as err:
            raise StoreError(
                f"cannot open the run store {self.path!r}: {err}. Check that the folder exists and is "
                f"writable, or pass another store path."
            ) from None
        return con

    def close(self) -> None:
        self.con.close()

    # -- writing -------------------------------------------------------------------------------

    def create_run(self, name: str, config: dict[str, Any], env: dict[str, Any]) -> int:
        now = time.time()
        try:
            with self.con:
                cur = self.con.execute(
                    "INSERT INTO runs (name, status, created, updated, pid, host, config_json, env_json)"
                    " VALUES (?, 'running', ?, ?, ?, ?, ?, ?)",
                    (name, now, now, os.getpid(), socket.gethostname(), _dumps(config), _dumps(env)),
                )
        except sqlite3.OperationalError as err:  # disk full, a file-size limit, a lock: before training starts
            raise _cannot_start(self.path, err) from None
        return int(cur.lastrowid)

    def resume_run(self, name: str) -> tuple[int, int] | None:
        """Reopen the latest run called `name` for writing; returns (run_id, next step) or None."""
        row = self.con.execute("SELECT run_id FROM runs WHERE name = ? ORDER BY run_id DESC LIMIT 1", (name,)).fetchone()
        if row is None:
            return None
        run_id = row[0]
        last = self.con.execute("SELECT MAX(step) FROM steps WHERE run_id = ?", (run_id,)).fetchone()[0]
        taken = self.con.execute("SELECT next_step FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
        try:
            with self.con:
                self.con.execute(
                    "UPDATE runs SET status='running', pid=?, host=?, updated=?, error=NULL WHERE run_id=?",
                    (os.getpid(), socket.gethostname(), time.time(), run_id),
                )
        except sqlite3.OperationalError as err:
            raise _cannot_start(self.path, err) from None
        return run_id, max(taken or 0, last + 1 if last is not None else 0)

    def set_layers(self, run_id: int, layers: Sequence[tuple]) -> None:
        """Record layers (position, name, type, kind, n_params, param_shapes JSON[, role]); known positions are kept."""
        columns = ["position", "layer", "type", "kind", "n_params", "param_shapes", "role"]
        if self.version < 2:
            columns = columns[:6]  # version 1 has no role
        for width in sorted({min(len(layer), len(columns)) for layer in layers}):
            rows = [(run_id, *layer[:width]) for layer in layers if min(len(layer), len(columns)) == width]
            with self.con:
                self.con.executemany(
                    f"INSERT OR IGNORE INTO layers (run_id, {', '.join(columns[:width])})"
                    f" VALUES ({', '.join('?' * (width + 1))})", rows,
                )

    def layer_positions(self, run_id: int) -> dict[str, int]:
        return dict(self.con.execute("SELECT layer, position FROM layers WHERE run_id=?", (run_id,)))

    def write(
        self,
        run_id: int,
        *,
        steps: Iterable[tuple[int, float]] = (),
        stats: Iterable[StatRow | StepStats] = (),
        scalars: Iterable[ScalarRow] = (),
        hists: Iterable[HistRow] = (),
        time_stats: Iterable[tuple] = (),
        first_nonfinite: dict[str, Any] | None = None,
        next_step: int | None = None,
        guard_actions: Iterable[tuple] = (),
        gaps: Iterable[Gap] = (),
    ) -> None:
        """Write one batch in one transaction (all or nothing); `gaps`: steps the writer had to drop (store/gaps.py).

        `stats` holds StepStats (one per step, numpy: the writer's form) or (step, position, stat,
        value) rows; a version 3 store keeps them as segments, versions 1 and 2 as one row per value.
        """
        stats = list(stats)
        blocks = [b for b in stats if isinstance(b, StepStats)]
        blocks += segments.from_rows(r for r in stats if not isinstance(r, StepStats))
        with self.con:
            self.con.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)", [(run_id, s, t) for s, t in steps])
            if self.version >= 3:
                segments.write_steps(self.con, run_id, blocks)
            else:
                self.con.executemany(
                    "INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?, ?)",
                    [(run_id, s, p, k, _nan_to_null(v)) for b in blocks for s, p, k, v in segments.to_rows(b)],
                )
            self.con.executemany(
                "INSERT OR REPLACE INTO scalars VALUES (?, ?, ?, ?)",
                [(run_id, s, k, _nan_to_null(v)) for s, k, v in scalars],
            )
            self.con.executemany(
                "INSERT OR REPLACE INTO hists VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, *row) for row in hists],
            )
            self.con.executemany(
                "INSERT OR REPLACE INTO time_stats VALUES (?, ?, ?, ?, ?, ?, ?)", [(run_id, *row) for row in time_stats]
            )
            write_actions(self.con, run_id, guard_actions)
            write_gaps(self.con, run_id, gaps)
            if first_nonfinite is not None:
                self.con.execute(
                    "UPDATE runs SET first_nonfinite_json=? WHERE run_id=? AND first_nonfinite_json IS NULL",
                    (_dumps(first_nonfinite), run_id),
                )
            self.con.execute("UPDATE runs SET updated=? WHERE run_id=?", (time.time(), run_id))
            if next_step is not None:
                self.con.execute("UPDATE runs SET next_step=? WHERE run_id=?", (next_step, run_id))

    def finish_run(self, run_id: int, status: str, error: str | None = None) -> None:
        with self.con:
            self.con.execute(
                "UPDATE runs SET status=?, error=?, updated=? WHERE run_id=?", (status, error, time.time(), run_id)
            )

    # -- reading -------------------------------------------------------------------------------

    def runs(self) -> list[dict[str, Any]]:
        """Every run in the file, oldest first, with its step and layer counts."""
        try:
            return self._runs()
        except (sqlite3.Error, TypeError, ValueError) as err:
            raise integrity.damaged(self.path, f"cannot be read ({type(err).__name__}: {err})") from None

    def _runs(self) -> list[dict[str, Any]]:
        rows = self.con.execute(
            "SELECT r.run_id, r.name, r.status, r.created, r.updated, r.pid, r.host, r.error,"
            " (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id),"
            " (SELECT MAX(step) FROM steps s WHERE s.run_id = r.run_id),"
            " (SELECT COUNT(*) FROM layers l WHERE l.run_id = r.run_id)"
            " FROM runs r ORDER BY r.run_id"
        ).fetchall()
        keys = ("run_id", "name", "status", "created", "updated", "pid", "host", "error", "n_steps", "last_step", "n_layers")
        out = [dict(zip(keys, row)) for row in rows]
        for run in out:
            run["status"] = effective_status(run["status"], run["pid"], run["host"])
        return out

    def find_run(self, name: str | None = None) -> int:
        """run_id of the latest run called `name` (or of the latest run when name is None)."""
        try:
            return self._find_run(name)
        except sqlite3.Error as err:
            raise integrity.damaged(self.path, f"cannot be read ({err})") from None

    def _find_run(self, name: str | None) -> int:
        if name is None:
            row = self.con.execute("SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
            if row is None:
                raise StoreError(f"the store {self.path!r} holds no runs yet: record one with graddoctor.watch(...).")
        else:
            row = self.con.execute("SELECT run_id FROM runs WHERE name=? ORDER BY run_id DESC LIMIT 1", (name,)).fetchone()
            if row is None:
                names = sorted({r[0] for r in self.con.execute("SELECT name FROM runs")})
                raise StoreError(f"no run named {name!r} in {self.path!r}; it holds: {', '.join(names) or 'no runs'}.")
        return int(row[0])


def effective_status(status: str, pid: int | None, host: str | None) -> str:
    """'crashed' for a run still marked running whose writer process is gone from this host."""
    if status != "running" or pid is None or host != socket.gethostname():
        return status
    if pid == os.getpid():
        return status
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "crashed"
    except PermissionError:
        pass
    return status


def _cannot_start(path: str, err: sqlite3.Error) -> StoreError:
    return StoreError(f"cannot start a run in the store {path!r}: {err}. Free space, raise the file-size limit or "
                      f"wait for the other writer, then start again.")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=repr, allow_nan=True, sort_keys=True)


def _read_header(path: Path) -> tuple[int, int]:
    """(application_id, user_version) from the 100-byte SQLite header, read as plain bytes.

    Opening a foreign WAL-mode database with sqlite3, even read-only, would leave -wal and -shm
    files beside it; reading the header touches nothing. A graddoctor store writes both fields
    before it switches to WAL, so they are always in the main file.
    """
    with open(path, "rb") as f:
        header = f.read(100)
    if 0 < len(header) < 100 and b"SQLite format 3\x00".startswith(header[:16]):
        raise integrity.damaged(path, f"is truncated: {len(header)} bytes, shorter than an SQLite header (100)")
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise StoreError(
            f"{str(path)!r} is not a graddoctor run store (not an SQLite database); it was left untouched. "
            f"Pass a new file name to record a run."
        )
    return int.from_bytes(header[68:72], "big"), int.from_bytes(header[60:64], "big")


def _validate(path: Path, *, readonly: bool) -> None:
    """Refuse, without touching it, a file that is not a graddoctor store."""
    if path.is_dir():
        raise StoreError(f"the store path {str(path)!r} is a folder; give a file path such as {str(path / 'runs.db')!r}.")
    if not path.exists() or path.stat().st_size == 0:
        if readonly:
            raise StoreError(f"no run store at {str(path)!r}: record a run with graddoctor.watch(..., store=...) first.")
        if not path.parent.exists():
            raise StoreError(f"cannot create the run store {str(path)!r}: the folder {str(path.parent)!r} does not exist.")
        return
    app_id, version = _read_header(path)
    if app_id != APPLICATION_ID:
        raise StoreError(
            f"{str(path)!r} is an SQLite database but not a graddoctor run store (application_id={app_id}); "
            f"it was left untouched. Pass a new file name."
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{str(path)!r} uses store schema {version}, newer than this graddoctor's {SCHEMA_VERSION}: upgrade graddoctor."
        )
