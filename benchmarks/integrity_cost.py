"""What the damaged-store checks cost (docs/errors-and-safety.md): readers' byte checks, watch's quick_check.

    PYTHONPATH=src python benchmarks/integrity_cost.py [--rows 600000]

Builds a store (one small watched run, then `--rows` stat rows added by SQL), then times
`check_file` (every reader) and `check_before_append` (watch on an existing store: schema and
PRAGMA quick_check), 5 times each; prints the median with min-max.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import graddoctor
from graddoctor.store import integrity


def build(path: Path, rows: int) -> None:
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with graddoctor.watch(model, opt, store=path, name="base") as run:
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
        run.log(loss=0.0)
    con = sqlite3.connect(path)
    per_step = 30
    con.executemany("INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?, ?)",
                    ((1, s, p, f"stat{s % 7}", s * 0.5) for s in range(rows // per_step) for p in range(per_step)))
    con.commit()
    con.close()


def timed(fn, repeats: int = 5) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=600_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.db"
        build(path, args.rows)
        size = path.stat().st_size / 1e6
        for label, fn, unit, scale in (("check_file (every reader)", lambda: integrity.check_file(path), "us", 1e6),
                                       ("check_before_append (watch)", lambda: integrity.check_before_append(path),
                                        "ms", 1e3)):
            ts = timed(fn)
            print(f"{label}: store {size:.1f} MB, {args.rows} stat rows: median {statistics.median(ts) * scale:.0f} {unit} "
                  f"(min {min(ts) * scale:.0f}, max {max(ts) * scale:.0f}, 5 runs)")


if __name__ == "__main__":
    main()
