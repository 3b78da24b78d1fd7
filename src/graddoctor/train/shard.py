"""Runs trained where the study's store is not: each into a store shard of its own, merged by the driver.

On a Ray cluster a task's node may not see the driver's files, and SQLite over a network
filesystem is not safe to share. So a task trains into a fresh store file in a temporary folder
of its node and returns that file's bytes; the driver copies its run into the study's store
(store/copy.py, one transaction). The numbers are the ones the run recorded, bit for bit.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..store.copy import copy_run
from ..store.sqlite import RunStore


def in_shard(train: Callable[[str], Any]) -> tuple[Any, bytes]:
    """`train(path)` into a fresh store file; return its result and the file's bytes."""
    with tempfile.TemporaryDirectory(prefix="graddoctor-shard-") as folder:
        path = os.path.join(folder, "shard.db")
        result = train(path)
        return result, Path(path).read_bytes()


def merge_shard(shard: bytes, store: str) -> list[int]:
    """Copy every run of a shard's bytes into the store file `store`; return their ids there."""
    with tempfile.TemporaryDirectory(prefix="graddoctor-shard-") as folder:
        path = os.path.join(folder, "shard.db")
        Path(path).write_bytes(shard)
        source = RunStore(path, readonly=True)
        try:
            ids = [int(r) for (r,) in source.con.execute("SELECT run_id FROM runs ORDER BY run_id")]
        finally:
            source.close()
        target = RunStore(store)
        try:
            return [copy_run(path, run_id, target) for run_id in ids]
        finally:
            target.close()
