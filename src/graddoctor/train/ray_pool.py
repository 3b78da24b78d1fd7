"""`parallel_map` on a Ray cluster: each item one Ray task, results yielded as they finish.

`ray` is imported here, when a Ray backend is asked for, never at `import graddoctor`. With no
address a local Ray instance is started for the call (and shut down after); with one (`"auto"`,
`"ray://head:10001"`) the call joins that cluster and leaves it running. A Ray already
initialised in this process is used as it is. Each task asks for one CPU and trains with one torch
thread, as a local worker process does, so the numbers are the same as the process pool's.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence, TypeVar

from ..errors import ConfigError, GradDoctorError

T = TypeVar("T")
R = TypeVar("R")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("backend='ray' needs ray: pip install 'graddoctor[ray]' (on every node of the cluster).") from None
    return ray


def _one_thread_call(fn: Callable[[T], R], item: T) -> R:
    """What runs in a Ray worker: one torch thread, as in the local pool's workers."""
    import torch

    torch.set_num_threads(1)
    return fn(item)


def ray_map(fn: Callable[[T], R], items: Sequence[T], *, address: str | None, advance: Callable[[T], None]
            ) -> Iterator[tuple[T, R]]:
    """Yield (item, fn(item)) in completion order, one Ray task per item; `advance(item)` as each ends.

    The first task that fails cancels the others and is raised here as a GradDoctorError naming
    the item (Ray wraps the worker's exception; its text is kept).
    """
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as err:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise GradDoctorError(f"could not start {where}: {type(err).__name__}: {err}") from err
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_one_thread_call)
        pending = {task.remote(fn, item): item for item in items}
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:
                    cause = getattr(err, "cause", None) or err  # RayTaskError carries the worker's exception
                    raise GradDoctorError(
                        f"the Ray task for {item!r:.80} failed: {type(cause).__name__}: {cause}"
                    ) from cause
                advance(item)
                yield item, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
    finally:
        if started:
            ray.shutdown()
