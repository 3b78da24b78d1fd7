"""Schema v3's numbers: one segment row per (statistic, block of layers, run of recorded steps).

A segment holds a [rows, n_steps] matrix (rows: up to BLOCK consecutive layer positions, input
side first) as fixed-width binary: the recorded values only, row-major, float32 or float64, and a
bit mask of which cells were recorded (NULL: all of them). NaN and +-Inf are stored as themselves;
"not recorded" is a 0 bit in the mask. So a flush writes n_stats x n_blocks rows whatever its
number of steps, one step's column reads n_stats x n_blocks rows, and one series reads the rows of
one (statistic, block): a few pages, not the whole run.

Width (docs/store-layout.md): fractions of counts (FRACTIONS) are float64, so that count / n reads
back exactly; every other statistic is float32 (the device computes it in float32: its relative
precision is ~6e-8 already) unless a finite value of the segment would not survive float32 (beyond
its range, or below its smallest normal number: a vanishing gradient of 1e-60 must not read 0),
then that segment is float64.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from typing import Iterable, Iterator

import numpy as np

from ..errors import StoreError

BLOCK = 64  # layer positions per segment row: a series reads 1/ceil(n_layers/64) of a statistic
CHUNK = 512  # recorded steps per segment row at most (a flush writes one row per stat and block)
FRACTIONS = frozenset({"act_zero_frac", "dead_frac", "nonfinite_frac", "saturated_frac"})
_F32 = np.finfo(np.float32)


@dataclasses.dataclass
class StepStats:
    """One recorded step's statistics, as the writer takes them: no Python object per value.

    values[k, p] is statistic `names[k]` at layer position p; recorded[k, p] says a value exists
    there (a recorded value may be NaN or +-Inf).
    """

    step: int
    names: tuple[str, ...]
    values: np.ndarray    # float64 [n_stats, n_positions]
    recorded: np.ndarray  # bool    [n_stats, n_positions]


def from_rows(rows: Iterable[tuple[int, int, str, float]]) -> list[StepStats]:
    """(step, position, stat, value) rows (the v1 form) as StepStats, one per step."""
    by_step: dict[int, list[tuple[int, str, float]]] = {}
    for step, pos, stat, value in rows:
        by_step.setdefault(int(step), []).append((int(pos), stat, value))
    out = []
    for step, cells in sorted(by_step.items()):
        names = tuple(sorted({s for _, s, _ in cells}))
        k = {s: i for i, s in enumerate(names)}
        n = max(p for p, _, _ in cells) + 1
        values = np.full((len(names), n), np.nan)
        recorded = np.zeros((len(names), n), dtype=bool)
        for pos, stat, value in cells:
            values[k[stat], pos] = np.nan if value is None else value
            recorded[k[stat], pos] = True
        out.append(StepStats(step, names, values, recorded))
    return out


def to_rows(block: StepStats) -> Iterator[tuple[int, int, str, float]]:
    """The inverse of from_rows: (step, position, stat, value) for every recorded cell."""
    for k, p in zip(*np.nonzero(block.recorded)):
        yield block.step, int(p), block.names[k], float(block.values[k, p])


# -- one segment's bytes -----------------------------------------------------------------------


def width_for(stat: str, values: np.ndarray) -> int:
    """4 (float32) or 8 (float64) bytes per value for these recorded values of `stat`."""
    if stat in FRACTIONS:
        return 8
    finite = np.abs(values[np.isfinite(values)])
    if finite.size and (finite.max() > _F32.max or ((finite < _F32.tiny) & (finite != 0)).any()):
        return 8
    return 4


def encode(stat: str, values: np.ndarray, recorded: np.ndarray) -> tuple[int, bytes | None, bytes]:
    """(width, mask or None, recorded values) of a [rows, n_steps] matrix."""
    kept = values[recorded]
    width = width_for(stat, kept)
    mask = None if recorded.all() else np.packbits(recorded, axis=None).tobytes()
    return width, mask, kept.astype("<f4" if width == 4 else "<f8").tobytes()


def decode(shape: tuple[int, int], width: int, mask: bytes | None, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(values float64 with NaN where not recorded, recorded bool) of one segment.

    Raises StoreError ("damaged store") where the row's fields do not fit together.
    """
    values, recorded = np.full(shape, np.nan), np.zeros(shape, dtype=bool)
    decode_into(values, recorded, shape, width, mask, data)
    return values, recorded


def decode_into(values: np.ndarray, recorded: np.ndarray, shape: tuple[int, int], width: int, mask: bytes | None,
                data: bytes) -> None:
    """`decode`, written into views of the result (NaN and False already there): the first values[:shape[0]] rows."""
    n = shape[0] * shape[1]
    if width not in (4, 8) or not isinstance(data, bytes) or not (mask is None or isinstance(mask, bytes)):
        raise _damaged(f"a statistics segment has width {width!r} or blobs of the wrong type")
    kept = np.frombuffer(data, dtype="<f4" if width == 4 else "<f8")
    rows = values.shape[0]
    if mask is None:
        if len(kept) != n:
            raise _damaged(f"a statistics segment holds {len(data)} bytes of values where {width * n} are needed")
        values[:] = kept.reshape(shape)[:rows]
        recorded[:] = True
        return
    if len(mask) != (n + 7) // 8:
        raise _damaged(f"a statistics segment's mask is {len(mask)} bytes where {(n + 7) // 8} are needed")
    r = np.unpackbits(np.frombuffer(mask, dtype=np.uint8), count=n).view(bool).reshape(shape)
    if len(kept) != int(np.count_nonzero(r)):
        raise _damaged(f"a statistics segment holds {len(data)} bytes of values where {width * int(np.count_nonzero(r))} "
                       f"are needed")
    if rows < shape[0]:  # rows past the run's layers (a damaged or cut segment): keep the ones that fit
        kept = kept[:int(np.count_nonzero(r[:rows]))]
        r = r[:rows]
    values[r] = kept
    recorded[:] = r


@contextlib.contextmanager
def reading() -> Iterator[None]:
    """SQLite's and numpy's errors on a damaged file, read lazily after `load`, as the one StoreError."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        raise _damaged(f"it cannot be read ({err})") from None
    except (ValueError, TypeError, json.JSONDecodeError) as err:
        raise _damaged(f"a row cannot be decoded ({err})") from None


def _damaged(detail: str) -> StoreError:
    return StoreError(f"damaged store: {detail}; the file was left as it is; restore it from a copy, or record "
                      f"into a new store file.")


# -- writing -------------------------------------------------------------------------------------


def stat_ids(con: sqlite3.Connection, names: Iterable[str]) -> dict[str, int]:
    """Ids of statistic names, adding the new ones (call inside the write transaction)."""
    names = sorted(set(names))
    con.executemany("INSERT OR IGNORE INTO stats (name) VALUES (?)", [(n,) for n in names])
    marks = ",".join("?" * len(names))
    return dict(con.execute(f"SELECT name, stat_id FROM stats WHERE name IN ({marks})", names))


def write_steps(con: sqlite3.Connection, run_id: int, blocks: list[StepStats]) -> int:
    """Write the statistics of a batch of steps as segments; returns the number of rows written."""
    if not blocks:
        return 0
    blocks = sorted(blocks, key=lambda b: b.step)
    names = sorted({n for b in blocks for n in b.names})
    ids = stat_ids(con, names)
    k = {n: i for i, n in enumerate(names)}
    width = max(b.values.shape[1] for b in blocks)
    values = np.full((len(names), width, len(blocks)), np.nan)  # [stat, position, step]
    recorded = np.zeros((len(names), width, len(blocks)), dtype=bool)
    for j, b in enumerate(blocks):
        rows = [k[n] for n in b.names]
        values[rows, : b.values.shape[1], j] = b.values
        recorded[rows, : b.recorded.shape[1], j] = b.recorded
    steps = np.array([b.step for b in blocks], dtype="<i8")
    out = []
    for name in names:
        for start in range(0, width, BLOCK):
            out += segment_rows(run_id, ids[name], name, start // BLOCK, steps,
                                values[k[name], start:start + BLOCK], recorded[k[name], start:start + BLOCK], CHUNK)
    insert(con, out)
    return len(out)


def segment_rows(run_id: int, stat_id: int, name: str, block: int, steps: np.ndarray, values: np.ndarray,
                 recorded: np.ndarray, chunk: int | None = None) -> list[tuple]:
    """Rows of the segments table for one (statistic, block): [rows, len(steps)], `chunk` steps per row."""
    out = []
    chunk = chunk or max(len(steps), 1)
    for a in range(0, len(steps), chunk):
        rec = recorded[:, a:a + chunk]
        if not rec.any():
            continue
        width, mask, data = encode(name, values[:, a:a + chunk], rec)
        s = np.ascontiguousarray(steps[a:a + chunk], dtype="<i8")
        out.append((run_id, stat_id, block, int(s[0]), int(s[-1]), rec.shape[0], len(s), s.tobytes(), width, mask, data))
    return out


def insert(con: sqlite3.Connection, rows: list[tuple]) -> None:
    con.executemany(
        "INSERT INTO segments (run_id, stat_id, block, first_step, last_step, n_rows, n_steps, steps, width, mask, vals)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows,
    )


# -- reading -------------------------------------------------------------------------------------


def stat_names(con: sqlite3.Connection, run_id: int) -> dict[str, int]:
    """{name: stat_id} of the statistics this run recorded (a segment naming no statistic: damaged)."""
    ids = [row[0] for row in con.execute("SELECT DISTINCT stat_id FROM segments WHERE run_id=?", (run_id,))]
    names = dict(con.execute(
        "SELECT name, stat_id FROM stats WHERE stat_id IN (SELECT DISTINCT stat_id FROM segments WHERE run_id=?)",
        (run_id,),
    ))
    if len(names) != len(ids):
        raise _damaged(f"{len(ids) - len(names)} statistic id(s) of run {run_id}'s segments are not in the stats table")
    return names


def read(
    con: sqlite3.Connection,
    run_id: int,
    stat_id: int,
    all_steps: np.ndarray,
    n_layers: int,
    *,
    steps: tuple[int, int] | None = None,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Values (NaN where not recorded) and recorded mask of one statistic: [layers, len(all_steps)].

    `all_steps` are the steps wanted, ascending (the columns): cells of other steps are left out.
    `steps` (first, last) reads only the segments that overlap that range; `block` only the
    segments of one block of layers, and then the result has that block's rows only. A later
    segment wins where two hold the same cell (a step written twice).
    """
    first = 0 if block is None else block * BLOCK
    n_out = n_layers if block is None else max(0, min(BLOCK, n_layers - first))
    n_steps = len(all_steps)
    values = np.full((n_out, n_steps), np.nan)
    recorded = np.zeros((n_out, n_steps), dtype=bool)
    if n_steps == 0 or n_out == 0:
        return values, recorded
    sql = "SELECT block, n_rows, n_steps, steps, width, mask, vals FROM segments WHERE run_id=? AND stat_id=?"
    args: list[int] = [run_id, stat_id]
    if block is not None:
        sql += " AND block=?"
        args.append(block)
    if steps is not None:
        sql += " AND first_step<=? AND last_step>=?"
        args += [steps[1], steps[0]]
    with reading():
        return _read_into(values, recorded, con.execute(sql + " ORDER BY seg_id", args), all_steps, first, n_out)


def _read_into(values: np.ndarray, recorded: np.ndarray, rows: Iterable[tuple], all_steps: np.ndarray, first: int,
               n_out: int) -> tuple[np.ndarray, np.ndarray]:
    n_steps = len(all_steps)
    for blk, n_rows, k, step_bytes, width, mask, data in rows:
        if not isinstance(step_bytes, bytes) or len(step_bytes) != 8 * k or k < 1 or n_rows < 1:
            raise _damaged(f"a statistics segment lists {k!r} steps in {len(step_bytes or b'')} bytes")
        seg_steps = np.frombuffer(step_bytes, dtype="<i8")
        cols = np.minimum(np.searchsorted(all_steps, seg_steps), n_steps - 1)
        keep = all_steps[cols] == seg_steps
        lo = blk * BLOCK - first
        hi = min(lo + n_rows, n_out)
        if hi <= lo or not keep.any():
            continue
        target = cols[keep]
        if keep.all() and np.all(np.diff(target) == 1):  # the usual case: decoded straight into its slice
            where = (slice(lo, hi), slice(int(target[0]), int(target[-1]) + 1))
            if not recorded[where].any():
                decode_into(values[where], recorded[where], (n_rows, k), width, mask, data)
                continue
        v, r = decode((n_rows, k), width, mask, data)
        v, r = v[: hi - lo], r[: hi - lo]
        if not keep.all():
            v, r = v[:, keep], r[:, keep]
        old_values, old_recorded = values[lo:hi, target], recorded[lo:hi, target]
        if old_recorded.any():  # a step written twice: the later segment wins, cell by cell
            values[lo:hi, target] = np.where(r, v, old_values)
            recorded[lo:hi, target] = old_recorded | r
        else:
            values[lo:hi, target] = v
            recorded[lo:hi, target] = r
    return values, recorded
