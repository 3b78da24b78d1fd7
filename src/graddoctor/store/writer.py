"""StoreWriter: rows go to memory at once and reach the file from a background thread.

The training thread never waits on SQLite: it appends host rows under a lock, and a daemon thread
commits them in one transaction at most every `flush_seconds`. A process killed with SIGKILL loses
at most the last interval; everything committed before stays readable (WAL).

The backlog is bounded: when `max_backlog` records wait (the writer fell behind), `put_record`
wakes the writer and blocks the training thread until the writer has taken them, rather than
grow without bound or drop a record (docs/store-layout.md: the writer's policy). At most
2 x `max_backlog` records are in memory (one batch being written, one queued), and closing
writes at most that: about one flush.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from ..errors import StoreError
from .sqlite import RunStore


class StoreWriter:
    def __init__(
        self,
        store: RunStore,
        run_id: int,
        *,
        flush_seconds: float = 1.0,
        prepare: Callable[[Any], dict[str, Any]] | None = None,
        max_backlog: int = 256,
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
        self._pending = _empty()
        self._records: list[Any] = []
        self.next_step: int | None = None  # set by the training thread; written at each flush
        self._flushed_step: int | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="graddoctor-store", daemon=True)
        self._thread.start()

    def put(self, **rows: Any) -> None:
        """Queue rows: layers=, steps=, stats=, scalars=, hists=, guard_actions= (lists), first_nonfinite= (dict)."""
        self._raise_if_failed()
        with self._lock:
            _merge(self._pending, rows)

    def put_record(self, record: Any) -> None:
        """Queue a record for `prepare` to turn into rows at the next flush (cheap for the caller)."""
        self._raise_if_failed()
        with self._lock:
            if len(self._records) >= self.max_backlog and self._thread.is_alive():
                self._wait_for_room()
            self._records.append(record)
            if len(self._records) >= self.max_backlog // 2:
                self._wake.set()

    def _wait_for_room(self) -> None:
        """Block (holding no lock but the condition's) until the writer takes the backlog."""
        start = time.perf_counter()
        self.blocked_count += 1
        while len(self._records) >= self.max_backlog and self._thread.is_alive() and self._error is None:
            self._wake.set()
            self._taken.wait(timeout=0.5)
        self.blocked_seconds += time.perf_counter() - start

    def flush(self) -> None:
        """Commit everything queued so far, now, from the calling thread."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, _empty()
                records, self._records = self._records, []
                # Read with the records, not after preparing them: meanwhile the training thread closes
                # more steps and moves next_step past them, and a next_step written ahead of its records
                # would make a resume after SIGKILL skip the steps lost with the next batch.
                next_step = self.next_step
                self._taken.notify_all()
            for record in records:  # the training thread keeps appending meanwhile
                _merge(batch, self.prepare(record))  # type: ignore[misc]
            if any(batch.values()) or next_step != self._flushed_step:
                layers = batch.pop("layers")
                if layers:
                    self.store.set_layers(self.run_id, layers)
                self.store.write(self.run_id, next_step=next_step, **batch)
                self._flushed_step = next_step
                if self.on_write is not None:
                    self.on_write({**batch, "layers": layers})
        self._raise_if_failed()

    def close(self, status: str, error: str | None = None) -> None:
        """Stop the thread, commit what is left and mark the run finished or failed."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        try:
            self.flush()
        finally:
            self.store.finish_run(self.run_id, status, error)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return  # close() writes what is left
            try:
                self.flush()
            except BaseException as err:  # reported to the training thread at its next put()
                self._error = err
                with self._lock:
                    self._taken.notify_all()
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise StoreError(f"writing to the run store {self.store.path!r} failed: {err}") from err


def _empty() -> dict[str, Any]:
    return {"layers": [], "steps": [], "stats": [], "scalars": [], "hists": [], "time_stats": [], "first_nonfinite": None,
            "guard_actions": []}


def _merge(batch: dict[str, Any], rows: dict[str, Any]) -> None:
    for key, value in rows.items():
        if key == "first_nonfinite":
            batch[key] = batch[key] or value
        else:
            batch[key].extend(value)
