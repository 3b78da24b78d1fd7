"""Rows on their way to the file: a batch of rows, and the bounded buffer a storage fault fills.

A batch is a dict of row lists (layers, steps, stats, scalars, hists, time_stats, guard_actions)
plus first_nonfinite. When a write fails with a storage fault (`fault_reason`), the writer keeps
the batch in `Unwritten` and retries; past `limit` recorded steps the oldest steps' rows are
dropped (every row of a step < the cut-off) and counted as one gap per fault. Layers and
first_nonfinite are never dropped: they are small and every later step needs them.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .gaps import Gap
from .segments import StepStats

# SQLite's primary result codes that a retry can outlive (the disk, the file or another connection
# is at fault, not the rows): BUSY 5, LOCKED 6, NOMEM 7, READONLY 8, IOERR 10, CORRUPT 11, FULL 13,
# CANTOPEN 14, PROTOCOL 15, PERM 3, NOTADB 26. CONSTRAINT, MISUSE, ... are bugs: raised as they are.
_FAULTS = {13: "disk full", 5: "database locked by another connection past the busy timeout",
           6: "database locked", 10: "disk I/O error", 8: "store became read-only", 14: "cannot open the store",
           3: "permission denied", 7: "out of memory", 11: "store damaged", 26: "store damaged", 15: "lock protocol error"}
_ROW_KEYS = ("steps", "stats", "scalars", "hists", "time_stats", "guard_actions")


def empty() -> dict[str, Any]:
    return {"layers": [], "steps": [], "stats": [], "scalars": [], "hists": [], "time_stats": [], "first_nonfinite": None,
            "guard_actions": []}


def merge(batch: dict[str, Any], rows: dict[str, Any]) -> None:
    for key, value in rows.items():
        if key == "first_nonfinite":
            batch[key] = batch[key] or value
        else:
            batch[key].extend(value)


def fault_reason(err: BaseException) -> str | None:
    """'disk full', 'file-size limit reached ...', ... for a storage fault worth retrying; None otherwise."""
    if not isinstance(err, sqlite3.Error):
        return None
    code = getattr(err, "sqlite_errorcode", None)
    if code is None:  # an error raised by the sqlite3 module itself, not by SQLite
        return None
    reason = _FAULTS.get(code & 0xFF)
    if reason is None:
        return None
    if code & 0xFF == 10:  # a write past RLIMIT_FSIZE fails with EFBIG, which SQLite reports as an I/O error
        soft = _file_size_limit()
        if soft is not None:
            reason = f"disk I/O error (the process's file-size limit RLIMIT_FSIZE is {soft} bytes)"
    return f"{reason} ({err})" if str(err) and str(err) not in reason else reason


def _file_size_limit() -> int | None:
    try:
        import resource  # POSIX only
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _step_of(row: Any) -> int:
    return row.step if isinstance(row, StepStats) else int(row[0])


class Unwritten:
    """The rows not yet in the file, bounded to `limit` recorded steps; what was dropped, as gaps."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.batch = empty()
        self.gaps: list[Gap] = []   # dropped and not yet recorded in the store
        self.dropped = 0            # recorded steps dropped over the whole run
        self._open: int | None = None  # index in `gaps` of the fault in progress's gap, grown while it lasts

    def add(self, batch: dict[str, Any]) -> None:
        """Append a newer batch after the rows kept."""
        merge(self.batch, batch)

    def has_rows(self) -> bool:
        return any(self.batch[key] for key in ("layers", *_ROW_KEYS)) or self.batch["first_nonfinite"] is not None

    @property
    def n_steps(self) -> int:
        return len({s for s, _ in self.batch["steps"]})

    def written(self) -> None:
        """The batch and the gaps reached the file."""
        self.batch = empty()
        self.gaps = []
        self._open = None  # the next drop belongs to a new fault

    def trim(self, reason: str, keep: int | None = None) -> int:
        """Drop the oldest steps beyond `keep` (default `limit`); returns how many recorded steps were dropped."""
        keep = self.limit if keep is None else keep
        held = sorted({s for s, _ in self.batch["steps"]})
        if len(held) <= keep:
            return 0
        gone = held[: len(held) - keep]
        for key in _ROW_KEYS:
            self.batch[key] = [row for row in self.batch[key] if _step_of(row) > gone[-1]]
        self.dropped += len(gone)
        if self._open is None:
            self._open = len(self.gaps)
            self.gaps.append(Gap(gone[0], gone[-1], len(gone), reason))
        else:
            gap = self.gaps[self._open]
            self.gaps[self._open] = Gap(gap.first_step, gone[-1], gap.n_steps + len(gone), gap.reason)
        return len(gone)
