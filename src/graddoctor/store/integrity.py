"""Is a store file whole, and how to open it without writing: the checks made before a store is read or appended to.

Readers open read-only and leave no side files that were not there: a store without a -wal file
(every finished run) is opened `immutable=1`, which reads the main file alone and creates
nothing; a store with a -wal file (a live or crashed writer) is opened `mode=ro` so that the
WAL's committed frames are read too. A damaged file raises `StoreError("damaged store: ...")`.
stdlib only; knows the schema's table names, nothing of runs.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from pathlib import Path

from ..errors import StoreError

# The columns each table must have (a store written by this schema or a later compatible one).
TABLES = {
    "runs": {"run_id", "name", "status", "created", "updated", "config_json", "env_json"},
    "layers": {"run_id", "position", "layer", "type", "kind", "n_params"},
    "steps": {"run_id", "step"},
    "stats": {"run_id", "step", "position", "stat", "value"},
    "scalars": {"run_id", "step", "key", "value"},
    "hists": {"run_id", "step", "position", "kind", "counts"},
}
# Schema v3 (docs/store-layout.md): `stats` names the statistics once; the values live in `segments`.
TABLES_V3 = {
    **{k: v for k, v in TABLES.items() if k != "stats"},
    "stats": {"stat_id", "name"},
    "segments": {"seg_id", "run_id", "stat_id"},
}
WAL_MAGIC = (0x377F0682, 0x377F0683)
WHAT_TO_DO = ("the file was left as it is; restore it from a copy, or record into a new store file "
              "(sqlite3 STORE '.recover' may save what is readable)")


def damaged(path: str | os.PathLike[str], detail: str) -> StoreError:
    """The one error for a store whose bytes are not what graddoctor wrote."""
    return StoreError(f"damaged store: {str(path)!r} {detail}; {WHAT_TO_DO}.")


def side_file(path: str | os.PathLike[str], suffix: str) -> Path:
    return Path(f"{os.fspath(path)}{suffix}")


def check_file(path: Path) -> None:
    """Byte-level checks, without SQLite: the header's page size and count agree with the file's length."""
    with open(path, "rb") as f:
        header = f.read(100)
    size = path.stat().st_size
    (page_size,) = struct.unpack(">H", header[16:18])
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise damaged(path, f"has an impossible page size ({page_size}) in its header")
    if size % page_size:
        raise damaged(path, f"is {size} bytes, not a whole number of {page_size}-byte pages (truncated or padded)")
    pages, change, valid_for = struct.unpack(">I", header[28:32])[0], header[24:28], header[92:96]
    if change == valid_for and pages and pages * page_size > size and not _has_wal(path):
        raise damaged(path, f"is truncated: {size} bytes where its header counts {pages} pages of {page_size} bytes")
    check_wal(path)


def _has_wal(path: Path) -> bool:
    wal = side_file(path, "-wal")
    return wal.exists() and wal.stat().st_size > 0


def check_wal(path: Path) -> None:
    """A non-empty -wal file must start with a valid WAL header, else SQLite would ignore it and later
    overwrite it: whatever it held would be lost without a word."""
    wal = side_file(path, "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return
    with open(wal, "rb") as f:
        head = f.read(32)
    if len(head) < 32:
        raise damaged(path, f"has a -wal file of {len(head)} bytes, shorter than a WAL header (32)")
    magic, version = struct.unpack(">II", head[:8])
    if magic not in WAL_MAGIC or version != 3007000:
        raise damaged(path, "has a -wal file that is not an SQLite write-ahead log (bad magic number)")
    if _wal_checksum(head[:24], big_endian=magic & 1) != struct.unpack(">II", head[24:32]):
        raise damaged(path, "has a -wal file whose header checksum is wrong (garbage written into the WAL)")


def _wal_checksum(data: bytes, *, big_endian: int) -> tuple[int, int]:
    """SQLite's WAL checksum (wal.c, walChecksumBytes) over 8-byte chunks."""
    fmt = ">" if big_endian else "<"
    s0 = s1 = 0
    for i in range(0, len(data), 8):
        x0, x1 = struct.unpack(fmt + "II", data[i:i + 8])
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0, s1


def read_only_uri(path: Path) -> str:
    """The URI that reads `path` without writing anything next to it.

    No -wal file: nothing was committed outside the main file, and no writer is connected (a
    writer keeps a -wal file while it is connected), so `immutable=1` reads it without locks or
    side files, also in a read-only folder. With a -wal file, `mode=ro` reads its committed frames.
    """
    uri = path.resolve().as_uri()
    if not side_file(path, "-wal").exists() and not side_file(path, "-journal").exists():
        return uri + "?mode=ro&immutable=1"
    return uri + "?mode=ro"


def cannot_open(path: Path, err: sqlite3.Error) -> StoreError:
    """A read-only open that failed: a live writer's WAL in a folder we may not write, or damage."""
    wal = side_file(path, "-wal")
    if wal.exists() and not os.access(path.parent, os.W_OK) and not side_file(path, "-shm").exists():
        return StoreError(
            f"cannot read the run store {str(path)!r}: it has a write-ahead log ({wal.name}) from a writer that is "
            f"running or crashed, and reading it needs a -shm file that cannot be created in the read-only folder "
            f"{str(path.parent)!r}. Copy the store with its -wal file to a writable folder and read the copy."
        )
    return damaged(path, f"cannot be opened ({err})")


def check_schema(con: sqlite3.Connection, path: str | os.PathLike[str], *, deep: bool = False) -> None:
    """The tables and columns graddoctor needs exist; `deep` adds `PRAGMA quick_check` (reads every page)."""
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        for table, needed in (TABLES_V3 if version >= 3 else TABLES).items():
            columns = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if not columns:
                raise damaged(path, f"has no {table!r} table")
            missing = needed - columns
            if missing:
                raise damaged(path, f"has a {table!r} table without the column(s) {sorted(missing)}")
        if deep:
            problems = [row[0] for row in con.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise damaged(path, f"fails SQLite's quick_check: {'; '.join(map(str, problems))}")
    except sqlite3.Error as err:
        raise damaged(path, f"cannot be read ({err})") from None


def check_before_append(path: Path) -> None:
    """What `watch` asks before it writes into an existing store: whole file, valid WAL, schema, quick_check.

    The check connects read-only (`mode=ro`) so that a WAL is read, never replayed or reset.
    """
    check_file(path)
    try:
        con = sqlite3.connect(read_only_uri(path), uri=True, timeout=30.0)
    except sqlite3.Error as err:
        raise cannot_open(path, err) from None
    try:
        check_schema(con, path, deep=True)
    finally:
        con.close()
