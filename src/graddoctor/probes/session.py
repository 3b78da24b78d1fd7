"""Where a Run's records go: the run store, its writer thread, the run's id, name and first step.

On one process the Run opens (or resumes) its run in the store itself. Under torch.distributed
(`reducer`: probes/distributed.py's Reducer, used here only through its methods) rank 0 alone opens the store, and every rank then meets once: all
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
    feed: Any = None  # the tracker mirrors' feed when the run is mirrored (rank 0 only): mirror_feeds()

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
        try:
            if self.feed is not None:  # the findings need the finished run: read before the store closes
                self.feed.close(read_run(self.store, self.run_id), status)
        finally:
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
    mirror: Callable[..., Any] | None = None,
) -> Session:
    """Open (or resume) the run `name` in `store`: here, or on rank 0 with every rank agreeing.

    `mirror(name=, run_id=, store=, config=, names=)` makes the run's tracker feed (rank 0 only).
    """
    if reducer is None:
        return _open_run(model, plan, optimizer, config, store, name, user_config, resume, mirror)
    reducer.attach(plan)  # raises on every rank alike: the same model everywhere
    path = store.path if isinstance(store, RunStore) else str(store)
    session, error = Session(None, False, path, NoWriter(), -1, 0, name, reducer), None
    if reducer.rank == 0:
        try:
            session = dataclasses.replace(
                _open_run(model, plan, optimizer, config, store, name, user_config, resume, mirror), reducer=reducer
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
    mirror: Callable[..., Any] | None = None,
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
    feed = None
    if mirror is not None:
        try:
            feed = mirror(name=name, run_id=run_id, store=opened.path, config=run_config(model, optimizer, config, user_config),
                          names={p: n for n, p in positions.items()})
        except BaseException as err:
            opened.finish_run(run_id, str(RunStatus.FAILED), f"starting the tracker mirror failed: {err}")
            if owns_store:
                opened.close()
            raise
    writer = StoreWriter(opened, run_id, flush_seconds=config.flush_seconds, prepare=rows.build,
                         on_write=feed.write if feed is not None else None)
    return Session(opened, owns_store, opened.path, writer, run_id, start_step, name, feed=feed)


def mirror_feeds(mirror: Any) -> Callable[..., Any] | None:
    """`watch(..., mirror=)`: a tracker mirror or a list of them, as the function that starts their
    feeds once the run exists in the store (None when nothing is mirrored). Refuses a bad value at once.

    A mirror is any object with `open_feed(name=, run_id=, store=, config=, names=)` returning a feed
    (`write(batch)` in the writer's thread, `close(view, status)` at the end): the subclasses of
    `graddoctor.integrations.mirror.TrackerMirror`. Duck-typed here because probes never import
    integrations (the layer order, README: Layout).
    """
    if mirror is None:
        return None
    items = list(mirror) if isinstance(mirror, (list, tuple)) else [mirror]
    bad = [item for item in items if not callable(getattr(item, "open_feed", None))]
    if bad or not items:
        got = repr(bad[0]) if bad else "an empty list"
        raise ConfigError(
            f"mirror= takes a tracker mirror or a list of them, got {got:.80}. Use "
            "graddoctor.integrations.mlflow.MlflowMirror(...) or graddoctor.integrations.wandb.WandbMirror(...), "
            "or your own subclass of graddoctor.integrations.mirror.TrackerMirror (docs/trackers.md)."
        )

    def start(**info: Any) -> _Feeds:
        return _Feeds([item.open_feed(**info) for item in items])

    return start


class _Feeds:
    """Several mirrors' feeds behind one: each batch and the close go to every one, in order."""

    def __init__(self, feeds: list[Any]) -> None:
        self.feeds = feeds

    def write(self, batch: dict[str, Any]) -> None:
        for feed in self.feeds:
            feed.write(batch)

    def close(self, view: RunView, status: str) -> None:
        for feed in self.feeds:
            feed.close(view, status)
