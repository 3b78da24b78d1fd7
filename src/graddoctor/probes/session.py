"""Where a Run's records go: the run store, its writer thread, the run's id, name and first step.

On one process the Run opens (or resumes) its run in the store itself. Under torch.distributed
(`reducer`: integrations.distributed's Reducer, used here only through its methods, since probes
never import integrations) rank 0 alone opens the store, and every rank then meets once: all
must watch the same layers with the same options, and all take rank 0's run id, name and start
step. An error opening the store on rank 0 is raised on every rank, never on rank 0 alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import nn

from ..config import RunStatus, WatchConfig
from ..errors import ConfigError, GradDoctorError
from ..store.sqlite import MEMORY, RunStore
from ..store.view import RunView, read_run
from ..store.writer import StoreWriter
from .rows import RowBuilder
from .select import LayerPlan
from .setup import environment, run_config


@dataclasses.dataclass
class Session:
    """The run a Run records into, and the store that holds it (None on ranks other than 0)."""

    store: RunStore | None
    owns_store: bool
    path: str
    writer: Any  # StoreWriter; NoWriter on ranks other than 0
    run_id: int
    start_step: int
    name: str
    reducer: Any = None

    def read(self, flush: Callable[[], None] | None) -> RunView:
        """What the run has recorded so far. `flush` writes what is pending first; None once closed."""
        if self.store is None:
            raise ConfigError(
                f"run.view() on rank {self.reducer.rank}: only rank 0 writes the run store; read it there "
                f"(or later with graddoctor.load({self.path!r}))."
            )
        if flush is not None:
            flush()
            return read_run(self.store, self.run_id)
        if self.store.path == MEMORY:
            return read_run(self.store, self.run_id)
        store = RunStore(self.store.path, readonly=True)
        try:
            return read_run(store, self.run_id)
        finally:
            store.close()

    def close(self, status: str, error: str | None = None) -> None:
        """Write what is left, mark the run, close the store if we opened it, leave graddoctor's group."""
        self.writer.close(status, error)
        if self.owns_store and self.store.path != MEMORY:
            self.store.close()
        if self.reducer is not None:
            self.reducer.close()


class NoWriter:
    """The store writer of ranks other than 0 under torch.distributed: they hold no store."""

    next_step: int | None = None

    def put(self, **rows: Any) -> None:
        pass

    def put_record(self, record: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, status: str, error: str | None = None) -> None:
        pass


def open_session(
    model: nn.Module,
    plan: list[LayerPlan],
    optimizer: Any,
    config: WatchConfig,
    store: str | RunStore,
    name: str,
    *,
    user_config: dict[str, Any] | None,
    resume: bool,
    reducer: Any,
) -> Session:
    """Open (or resume) the run `name` in `store`: here, or on rank 0 with every rank agreeing."""
    if reducer is None:
        return _open_run(model, plan, optimizer, config, store, name, user_config, resume)
    reducer.attach(plan)  # raises on every rank alike: the same model everywhere
    path = store.path if isinstance(store, RunStore) else str(store)
    session, error = Session(None, False, path, NoWriter(), -1, 0, name, reducer), None
    if reducer.rank == 0:
        try:
            session = dataclasses.replace(
                _open_run(model, plan, optimizer, config, store, name, user_config, resume), reducer=reducer
            )
        except Exception as err:  # told to every rank by agree(), which then raises everywhere
            error = str(err) if isinstance(err, GradDoctorError) else f"{type(err).__name__}: {err}"
    summary = {
        "layers": [layer.name for layer in plan], "watch": config.to_dict(),
        "optimizer": type(optimizer).__name__, "resume": resume, "world": reducer.world,
    }
    try:
        agreed = reducer.agree(summary, error, {"run_id": session.run_id, "start": session.start_step, "name": name})
    except BaseException as err:
        if error is None:  # rank 0 opened the run (a no-op on the other ranks)
            session.writer.close(str(RunStatus.FAILED), f"{type(err).__name__}: {err}")
            if session.owns_store:
                session.store.close()
        reducer.close()
        raise
    session.run_id, session.start_step, session.name = agreed["run_id"], agreed["start"], agreed["name"]
    return session


def _open_run(
    model: nn.Module,
    plan: list[LayerPlan],
    optimizer: Any,
    config: WatchConfig,
    store: str | RunStore,
    name: str,
    user_config: dict[str, Any] | None,
    resume: bool,
) -> Session:
    owns_store = not isinstance(store, RunStore)
    opened = RunStore(store) if owns_store else store
    try:
        positions: dict[str, int] = {}
        resumed = opened.resume_run(name) if resume else None
        if resumed is not None:
            run_id, start_step = resumed
            positions = opened.layer_positions(run_id)
        else:
            config_json = run_config(model, optimizer, config, user_config)
            run_id, start_step = opened.create_run(name, config_json, environment(model)), 0
    except BaseException:
        if owns_store:
            opened.close()
        raise
    rows = RowBuilder(plan, positions)
    writer = StoreWriter(opened, run_id, flush_seconds=config.flush_seconds, prepare=rows.build)
    return Session(opened, owns_store, opened.path, writer, run_id, start_step, name)
