"""StoreWriter: rows go to memory at once and reach the file from a background thread.

The training thread never waits on SQLite: it appends host rows under a lock, and a daemon thread
commits them in one transaction at most every `flush_seconds`. A process killed with SIGKILL loses
at most the last interval; everything committed before stays readable (WAL).

The backlog is bounded: when `max_backlog` records wait (the writer fell behind), `put_record`
wakes the writer and blocks the training thread until the writer has taken them, rather than
grow without bound or drop a record (docs/store-layout.md: the writer's policy). At most
2 x `max_backlog` records are in memory (one batch being written, one queued), and closing
writes at most that: about one flush.

Storage faults (docs/store.md, "Storage faults"): a write that fails because the disk is full,
a file-size limit is reached or another connection holds the lock past `busy_seconds`
(`unwritten.fault_reason`) never reaches the training thread. Its rows stay in memory, at most
`max_unwritten` recorded steps, and are retried once per `flush_seconds`; past the bound the
oldest steps are dropped and counted. The gap is recorded in the store with the first write
that succeeds again (store/gaps.py) and named in the run's `error` at closing. One warning at
the first fault; one more at closing only if the store still cannot be written then.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any, Callable

from ..errors import StoreError, StoreWarning
from .gaps import Gap, describe
from .sqlite import RunStore
from .unwritten import Unwritten, empty, fault_reason, merge

MAX_UNWRITTEN = 1024  # recorded steps held in memory while the store cannot be written
BUSY_SECONDS = 2.0  # how long one write waits for another connection's lock before it counts as a fault


class StoreWriter:
    def __init__(
        self,
        store: RunStore,
        run_id: int,
        *,
        flush_seconds: float = 1.0,
        prepare: Callable[[Any], dict[str, Any]] | None = None,
        max_backlog: int = 256,
        max_unwritten: int | None = None,
        busy_seconds: float | None = None,
        on_write: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.prepare = prepare  # turns a queued record into rows, in the writer's thread
        self.on_write = on_write  # sees each committed batch, in the writer's thread (tracker mirrors)
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self.max_backlog = max_backlog
        self._lock = threading.Lock()  # guards the pending lists: held for an append or a swap only
        self._taken = threading.Condition(self._lock)  # notified when the writer takes the queued records
        self._wake = threading.Event()  # flush now: the backlog is half full, or closing
        self.blocked_seconds = 0.0  # time the training thread waited on a full backlog
        self.blocked_count = 0
        self._flush_lock = threading.Lock()  # one flush at a time (thread or caller) owns the connection
        self._pending = empty()
        self._records: list[Any] = []
        self.next_step: int | None = None  # set by the training thread; written at each flush
        self._flushed_step: int | None = None
        self._unwritten = Unwritten(MAX_UNWRITTEN if max_unwritten is None else max_unwritten)  # taken, not in the file
        self.fault: str | None = None  # the storage fault in progress; None while writes succeed
        self.faults = 0  # writes that failed with a storage fault
        self.gaps: list[Gap] = []  # gaps recorded in the store so far
        self._warned = False
        self._busy_before = self._set_busy_timeout(BUSY_SECONDS if busy_seconds is None else busy_seconds)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="graddoctor-store", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Recorded steps dropped because the store could not be written (the gaps' total)."""
        return self._unwritten.dropped

    def put(self, **rows: Any) -> None:
        """Queue rows: layers=, steps=, stats=, scalars=, hists=, guard_actions= (lists), first_nonfinite= (dict)."""
        self._raise_if_failed()
        with self._lock:
            merge(self._pending, rows)

    def put_record(self, record: Any) -> None:
        """Queue a record for `prepare` to turn into rows at the next flush (cheap for the caller).

        While a storage fault lasts it never blocks: the writer keeps taking the queue and drops the oldest."""
        self._raise_if_failed()
        with self._lock:
            if len(self._records) >= self.max_backlog and self._thread.is_alive() and self.fault is None:
                self._wait_for_room()
            self._records.append(record)
            if len(self._records) >= self.max_backlog // 2:
                self._wake.set()

    def _wait_for_room(self) -> None:
        """Block (holding no lock but the condition's) until the writer takes the backlog."""
        start = time.perf_counter()
        self.blocked_count += 1
        while (len(self._records) >= self.max_backlog and self._thread.is_alive() and self._error is None
               and self.fault is None):
            self._wake.set()
            self._taken.wait(timeout=0.5)
        self.blocked_seconds += time.perf_counter() - start

    def flush(self) -> None:
        """Commit everything queued so far, now, from the calling thread.

        A storage fault keeps the rows for the next flush (see the module's docstring); it does not raise."""
        self._flush(write=True)
        self._raise_if_failed()

    def _flush(self, *, write: bool) -> None:
        """Take the queue and write what is unwritten (`write`), or only take it and keep the bound."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, empty()
                records, self._records = self._records, []
                # Read with the records, not after preparing them: meanwhile the training thread closes
                # more steps and moves next_step past them, and a next_step written ahead of its records
                # would make a resume after SIGKILL skip the steps lost with the next batch.
                next_step = self.next_step
                self._taken.notify_all()
            for record in records:  # the training thread keeps appending meanwhile
                merge(batch, self.prepare(record))  # type: ignore[misc]
            self._unwritten.add(batch)
            if self.fault is not None:  # the bound holds before a retry too
                self._unwritten.trim(self.fault)
            if write:
                self._write(next_step)

    def _write(self, next_step: int | None) -> None:
        held = self._unwritten
        if not held.has_rows() and not held.gaps and next_step == self._flushed_step:
            return
        rows = dict(held.batch)
        layers = rows.pop("layers")
        try:
            if layers:
                self.store.set_layers(self.run_id, layers)
            self.store.write(self.run_id, next_step=next_step, gaps=held.gaps, **rows)
        except Exception as err:
            reason = fault_reason(err)
            if reason is None:
                raise
            self._on_fault(reason)
            return
        self.gaps += held.gaps
        held.written()
        self._flushed_step = next_step
        self.fault = None
        if self.on_write is not None:
            self.on_write({**rows, "layers": layers})

    def _on_fault(self, reason: str) -> None:
        self._rollback()
        self.fault = reason
        self.faults += 1
        self._unwritten.trim(reason)
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"graddoctor: cannot write to the run store {self.store.path!r}: {reason}. Training goes on: up to "
                f"{self._unwritten.limit} recorded steps wait in memory and are written when the store can be "
                f"written again; beyond that the oldest are dropped, and the gap is recorded in the run "
                f"(graddoctor.load(...).gaps). Free space, raise the limit or release the lock.",
                StoreWarning, stacklevel=2,
            )

    def close(self, status: str, error: str | None = None) -> None:
        """Stop the thread, commit what is left and mark the run finished or failed.

        A storage fault here warns and does not raise; another failure raises StoreError, except when
        the run failed with the user's own exception (`status` 'failed'), which must not be masked."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        failure: BaseException | None = self._error
        self._error = None
        try:
            self._flush(write=True)
        except Exception as err:  # not a storage fault: turning records into rows failed
            failure = failure or err
        if self.fault is not None:  # what is still held is lost with the process: say so in the run, if possible
            self._unwritten.trim(self.fault, keep=0)
            try:
                self._write(self.next_step)
            except Exception as err:  # not a storage fault
                failure = failure or err
        note = describe([*self.gaps, *self._unwritten.gaps])
        try:
            self.store.finish_run(self.run_id, status, "; ".join(x for x in (error, note) if x) or None)
        except Exception as err:
            reason = fault_reason(err)
            if reason is None:
                failure = failure or err
            else:
                self.fault = reason
        self._set_busy_timeout(self._busy_before)
        if self.fault is not None:
            warnings.warn(
                f"graddoctor: the run store {self.store.path!r} still cannot be written at the end of the run "
                f"({self.fault}): {note or 'the run could not be marked finished'}. The steps stored before "
                f"the fault are intact; the run reads as 'crashed' once this process ends.",
                StoreWarning, stacklevel=2,
            )
        if failure is not None:
            wrapped = StoreError(f"writing to the run store {self.store.path!r} failed: {failure}")
            if status == "failed":  # the user's own exception is on its way: never mask it
                warnings.warn(str(wrapped), StoreWarning, stacklevel=2)
            else:
                raise wrapped from failure

    def _loop(self) -> None:
        tried = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return  # close() writes what is left
            due = self.fault is None or time.monotonic() - tried >= self.flush_seconds  # retries: once a flush interval
            try:
                self._flush(write=due)
            except BaseException as err:  # reported to the training thread at its next put()
                self._error = err
                with self._lock:
                    self._taken.notify_all()
                return
            if due:
                tried = time.monotonic()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise StoreError(f"writing to the run store {self.store.path!r} failed: {err}") from err

    def _rollback(self) -> None:
        """Leave no transaction open after a failed write (the connection's context manager normally has)."""
        try:
            if self.store.con.in_transaction:
                self.store.con.rollback()
        except Exception:  # noqa: BLE001 - the next write retries on a fresh transaction anyway
            pass

    def _set_busy_timeout(self, seconds: float) -> float:
        """Set the connection's busy timeout; returns the one it had (restored at closing)."""
        try:
            before = self.store.con.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
            self.store.con.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")
        except Exception:  # noqa: BLE001 - a closed or failing connection: the first write will say so
            return seconds
        return before
