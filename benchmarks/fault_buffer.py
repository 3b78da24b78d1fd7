"""What a storage fault costs while training: the writer's buffer per held step, the training thread's waits.

A deep MLP (Linear + ReLU pairs: `--layers` watched layers) is watched into a store that a second
connection then locks (a lock held past the busy timeout is one storage fault; docs/store.md).
It trains `--steps` steps while locked and prints the memory of the rows held per recorded step
(the statistics' numpy blocks; histograms are JSON text, one recorded step in 100), that times
MAX_UNWRITTEN, and the median and longest optimizer step with the store healthy and locked
(interleaved blocks, one process), so the training thread's waits show.

    python benchmarks/fault_buffer.py [--layers 400] [--steps 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import warnings

import torch

import graddoctor
from graddoctor.store import writer as writer_module


def _model(layers: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    parts: list[torch.nn.Module] = []
    for _ in range(layers // 2):
        parts += [torch.nn.Linear(64, 64), torch.nn.ReLU()]
    model = torch.nn.Sequential(*parts)
    return model, torch.optim.SGD(model.parameters(), lr=1e-3)


def _steps(model, opt, x, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=400)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    busy, writer_module.BUSY_SECONDS = writer_module.BUSY_SECONDS, 0.01
    try:
        return _run(args)
    finally:
        writer_module.BUSY_SECONDS = busy


def _run(args: argparse.Namespace) -> int:
    path = os.path.join(tempfile.mkdtemp(), "runs.db")
    model, opt = _model(args.layers)
    x = torch.randn(32, 64)
    healthy: list[float] = []
    locked: list[float] = []
    per_step = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fault's one StoreWarning
        with graddoctor.watch(model, opt, store=path, flush_seconds=0.05) as run:
            writer = run._writer
            _steps(model, opt, x, 2)
            for _ in range(args.rounds):  # interleaved: healthy block, locked block
                healthy += _steps(model, opt, x, args.steps)
                run.view()
                lock = sqlite3.connect(path, isolation_level=None)
                lock.execute("BEGIN IMMEDIATE")
                locked += _steps(model, opt, x, args.steps)
                while writer._records or writer.fault is None:
                    time.sleep(0.01)
                batch, held = writer._unwritten.batch, writer._unwritten.n_steps
                per_step = max(per_step, sum(s.values.nbytes + s.recorded.nbytes for s in batch["stats"]) / max(held, 1))
                lock.rollback()
                lock.close()
                while writer.fault is not None:
                    time.sleep(0.01)
            shape = batch["stats"][0].values.shape if batch["stats"] else (0, 0)
    print(f"{args.layers} layers ({shape[0]} statistics x {shape[1]} positions): {per_step / 1024:.1f} KiB held per "
          f"recorded step; x MAX_UNWRITTEN={writer_module.MAX_UNWRITTEN}: {per_step * writer_module.MAX_UNWRITTEN / 2**20:.0f} MiB")
    for name, times in (("healthy", healthy), ("locked", locked)):
        print(f"step {name:8s} median {statistics.median(times) * 1e3:7.2f} ms  min {min(times) * 1e3:7.2f}  "
              f"max {max(times) * 1e3:7.2f}  ({len(times)} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
