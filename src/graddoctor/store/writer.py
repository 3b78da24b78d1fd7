"""StoreWriter: rows go to memory at once and reach the file from a background thread.

The training thread never waits on SQLite: it appends host rows under a lock, and a daemon thread
commits them in one transaction at most every `flush_seconds`. A process killed with SIGKILL loses
at most the last interval; everything committed before stays readable (WAL).
"""

from __future__ import annotations

import threading
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
    ) -> None:
        self.store = store
        self.prepare = prepare  # turns a queued record into rows, in the writer's thread
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()  # guards the pending lists: held for an append or a swap only
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
            self._records.append(record)

    def flush(self) -> None:
        """Commit everything queued so far, now, from the calling thread."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, _empty()
                records, self._records = self._records, []
            for record in records:  # the training thread keeps appending meanwhile
                _merge(batch, self.prepare(record))  # type: ignore[misc]
            next_step = self.next_step
            if any(batch.values()) or next_step != self._flushed_step:
                layers = batch.pop("layers")
                if layers:
                    self.store.set_layers(self.run_id, layers)
                self.store.write(self.run_id, next_step=next_step, **batch)
                self._flushed_step = next_step
        self._raise_if_failed()

    def close(self, status: str, error: str | None = None) -> None:
        """Stop the thread, commit what is left and mark the run finished or failed."""
        self._stop.set()
        self._thread.join()
        try:
            self.flush()
        finally:
            self.store.finish_run(self.run_id, status, error)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except BaseException as err:  # reported to the training thread at its next put()
                self._error = err
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise StoreError(f"writing to the run store {self.store.path!r} failed: {err}") from err


def _empty() -> dict[str, Any]:
    return {"layers": [], "steps": [], "stats": [], "scalars": [], "hists": [], "first_nonfinite": None, "guard_actions": []}


def _merge(batch: dict[str, Any], rows: dict[str, Any]) -> None:
    for key, value in rows.items():
        if key == "first_nonfinite":
            batch[key] = batch[key] or value
        else:
            batch[key].extend(value)
