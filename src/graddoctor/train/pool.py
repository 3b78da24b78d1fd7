"""Run a function over many items in worker processes, with a progress bar: the engine of sweeps and `compare`.

Workers are spawned (not forked: torch and forked threads do not mix) and run one torch thread
each, since the runs are small and the workers already fill the cores. Results are yielded as they
finish, so a caller can save each one at once (a sweep stays resumable after Ctrl-C).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
import time
from typing import Callable, Iterator, Sequence, TypeVar

import torch

from ..errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


BACKENDS = ("process", "ray")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, jobs: int, progress: bool,
                 label: Callable[[T], str] = str, backend: str = "process",
                 ray_address: str | None = None) -> Iterator[tuple[T, R]]:
    """Yield (item, fn(item)) in completion order; `jobs` processes (1: in this process, in order).

    `backend="ray"` runs each item as a Ray task instead (train/ray_pool.py; `ray_address` None: a
    local Ray instance for this call); `jobs` is then the cluster's business. `fn` and the items
    must pickle when jobs > 1 or on Ray. The first exception cancels what has not started and is
    re-raised here.
    """
    check_backend(backend, ray_address)
    bar = Progress(len(items), enabled=progress)
    try:
        if backend == "ray":
            from .ray_pool import ray_map

            yield from ray_map(fn, items, address=ray_address, advance=lambda item: bar.advance(label(item)))
            return
        if jobs <= 1 or len(items) <= 1:
            for item in items:
                result = fn(item)
                bar.advance(label(item))
                yield item, result
            return
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=context,
                                                    initializer=_init_worker) as pool:
            futures = {pool.submit(fn, item): item for item in items}
            try:
                for future in concurrent.futures.as_completed(futures):
                    item = futures[future]
                    result = future.result()
                    bar.advance(label(item))
                    yield item, result
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        bar.close()


def check_backend(backend: str, ray_address: str | None) -> None:
    """Refuse an unknown backend, or a Ray address given to the process pool, before anything runs."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if ray_address is not None and backend != "ray":
        raise ConfigError(f"ray_address={ray_address!r} is for backend='ray'; got backend={backend!r}.")
    if ray_address is not None and not (isinstance(ray_address, str) and ray_address):
        raise ConfigError(f"ray_address must be a non-empty string ('auto', 'ray://host:10001'); got {ray_address!r}.")


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one; else all of them): the default jobs."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _init_worker() -> None:
    # Runs are small and the workers already fill the cores: more threads only contend.
    torch.set_num_threads(1)


class Progress:
    """A plain text progress bar on stderr: `[#####.....] 7/18   12s relu/seed1`."""

    def __init__(self, total: int, *, enabled: bool, width: int = 30) -> None:
        self.total, self.done, self.enabled, self.width = total, 0, enabled, width
        self.t0 = time.perf_counter()
        self.advance("", step=0)

    def advance(self, label: str, step: int = 1) -> None:
        self.done += step
        if not self.enabled:
            return
        filled = int(self.width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.t0
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:5.0f}s {label[:40]:<40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
