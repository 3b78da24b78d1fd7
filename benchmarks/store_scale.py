"""What the run store costs for long runs of a big model: size, writer throughput, each verb's time and memory.

Synthetic runs of N recorded steps x 400 layers (200 Linear + 200 Tanh, ~7 statistics per layer,
like a watched 400-layer MLP) are written through the real writer (StoreWriter, bounded backlog,
schema v3), and the same steps' rows are written in the old layout (schema v1: one row per value,
executemany of (run, step, position, stat, value)) in the same process, for comparison. Then each
reader runs in its own subprocess, which reports its wall time and peak RSS (ru_maxrss):
`graddoctor show` (one step), one series (`load` + `stat`), `graddoctor diagnose`, `graddoctor
report`, `graddoctor export --format csv`.

`--build` also times the rows a real watched 400-layer model hands the writer (RowBuilder.build,
the writer thread's Python work per recorded step).

    python benchmarks/store_scale.py --steps 1000 10000 50000 [--build] [--keep DIR]

The old layout's writer is timed on the first min(N, --old-steps) steps only (it gets slower as
its file grows, so this flatters it).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_LAYERS = 400
PARAM_STATS = ("grad_norm", "grad_rms", "nonfinite_frac", "out_grad_norm", "update_ratio", "weight_norm")
ACT_STATS = ("act_mean", "act_std", "act_zero_frac", "out_grad_norm", "saturated_frac", "dead_frac")
NAMES = tuple(sorted(set(PARAM_STATS) | set(ACT_STATS)))


def layers() -> list[tuple]:
    return [(p, str(p), "Linear" if p % 2 == 0 else "Tanh", "param" if p % 2 == 0 else "activation",
             1056 if p % 2 == 0 else 0, json.dumps({"weight": [32, 32], "bias": [32]}) if p % 2 == 0 else "{}")
            for p in range(N_LAYERS)]


def recorded_mask() -> np.ndarray:
    mask = np.zeros((len(NAMES), N_LAYERS), dtype=bool)
    for k, name in enumerate(NAMES):
        mask[k, 0::2] = name in PARAM_STATS
        mask[k, 1::2] = name in ACT_STATS
    return mask


def synthetic_steps(n: int, seed: int = 0):
    """StepStats of n steps: per-layer scales falling toward the input, noise per step, fractions k/n."""
    from graddoctor.store.segments import FRACTIONS, StepStats

    rng = np.random.default_rng(seed)
    mask = recorded_mask()
    base = np.exp(rng.normal(0, 1, (len(NAMES), 1)) - 0.01 * np.arange(N_LAYERS)[::-1])
    fractions = np.array([name in FRACTIONS for name in NAMES])
    for step in range(n):
        values = base * np.exp(rng.normal(0, 0.1, base.shape[:1] + (N_LAYERS,)))
        values[fractions] = rng.integers(0, 8192, (int(fractions.sum()), N_LAYERS)) / 8192
        yield StepStats(step, NAMES, np.where(mask, values, np.nan), mask)


def write_v3(path: Path, n: int) -> dict:
    """n steps through the real writer as fast as the producer can go; the writer's steps/s."""
    from graddoctor.store.sqlite import RunStore
    from graddoctor.store.writer import StoreWriter

    store = RunStore(path)
    run_id = store.create_run("bench", {"watch": {"every": 1}}, {})
    store.set_layers(run_id, layers())
    writer = StoreWriter(store, run_id, flush_seconds=1.0, prepare=lambda rows: rows)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for block in synthetic_steps(n):
        s = block.step
        writer.put_record({"steps": [(s, 1e9 + s)], "stats": [block],
                           "scalars": [(s, "loss", 1.0 / (s + 1)), (s, "lr/group0", 0.01)]})
        writer.next_step = s + 1
    t_closing = time.perf_counter()
    writer.close("finished")
    t1 = time.perf_counter()
    store.close()
    return {"steps_per_s": n / (t1 - t0), "close_s": t1 - t_closing, "blocked_s": writer.blocked_seconds,
            "cpu_s": time.process_time() - cpu0}


def write_v1(path: Path, n: int) -> dict:
    """The old layout's write path (schema v1, store.write before v3), fed the same steps in 1 s batches."""
    from graddoctor.store.schema import APPLICATION_ID, DDL_V1
    from graddoctor.store.segments import to_rows

    con = sqlite3.connect(path)
    con.executescript(f"BEGIN; {DDL_V1} PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version=1; COMMIT;")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    t0 = time.perf_counter()
    batch: list = []
    last = t0
    for block in synthetic_steps(n):
        batch.append(block)
        if time.perf_counter() - last >= 1.0 or block.step == n - 1:
            with con:  # what RunStore.write did: a tuple per value, NULL for NaN
                con.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)", [(1, b.step, 0.0) for b in batch])
                con.executemany("INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?, ?)",
                                [(1, s, p, k, None if v != v else v) for b in batch for s, p, k, v in to_rows(b)])
            batch, last = [], time.perf_counter()
    t1 = time.perf_counter()
    con.close()
    return {"steps_per_s": n / (t1 - t0)}


# -- readers, each in its own process --------------------------------------------------------------------


VERBS = {
    "show": lambda path, out: ["show", str(path), "--step", "{mid}"],
    "diagnose": lambda path, out: ["diagnose", str(path)],
    "report": lambda path, out: ["report", str(path), "-o", str(out / "report.html")],
    "export": lambda path, out: ["export", str(path), "--format", "csv", "-o", str(out / "export.csv")],
}


def child(verb: str, argv: list[str]) -> None:
    """In the subprocess: run one reader, print its wall time and peak RSS as JSON."""
    import contextlib
    import io

    t_start = time.perf_counter()
    import graddoctor
    from graddoctor import cli  # noqa: F401 - imports counted apart from the verb's own time

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    if verb == "series":

        run = graddoctor.load(argv[0])
        values = run.stat("grad_norm", run.layers[len(run.layers) // 2])
        assert len(values) == len(run.steps)
        rc = 0
    else:
        from graddoctor.cli import main

        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    cpu = time.process_time() - cpu0  # the verb's CPU time: steadier than wall time on a loaded machine
    print(json.dumps({"rc": rc, "wall_s": wall, "cpu_s": cpu, "import_s": t0 - t_start, "peak_mb": peak}))


def run_verb(verb: str, path: Path, out: Path, n: int) -> dict:
    argv = [str(path)] if verb == "series" else [a.replace("{mid}", str(n // 2)) for a in VERBS[verb](path, out)]
    proc = subprocess.run([sys.executable, __file__, "_child", verb, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def build_cost(steps: int = 40, rounds: int = 3) -> dict:
    """The writer's work per recorded step of a real watched 400-layer MLP, old path vs new, per tier.

    Old: record.aggregate + derive.derive + a tuple per value, then executemany into a v1 store.
    New: RowBuilder.build (fastrows: numpy blocks), then RunStore.write into a v3 store. The build
    times alternate old/new per step over `rounds` rounds; each store write is one transaction
    of all the steps of a tier (one flush). The stores start empty (the v1 one only gets slower as it
    grows). The default tiers record the full tier at the first steps and every 10th, the cheap
    tier (gradient and output-gradient norms) between: "all" is that mix, as a run writes it.
    """
    import gc

    import torch
    from torch import nn

    import graddoctor
    from graddoctor.probes.derive import derive
    from graddoctor.probes.record import aggregate

    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(200) for m in (nn.Linear(32, 32), nn.Tanh())])
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(64, 32)
    with tempfile.TemporaryDirectory() as tmp:
        with graddoctor.watch(model, opt, store=Path(tmp) / "b.db", flush_seconds=3600, hist_every=0) as run:
            for _ in range(steps):
                loss = model(x).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            writer = run._writer
            builder = writer.prepare.__self__
            records = list(writer._records)
            old_t, new_t, new_rows, old_rows = [], [], [], []
            gc.collect()
            for _ in range(rounds):
                new_rows, old_rows = [], []
                for p in records:  # thread CPU time: what the writer thread spends, whatever the machine's load
                    t0 = time.thread_time()
                    derived = derive(builder.plan, aggregate(p.keys, p.values), p.numel, p.nonfinite, None)
                    old_rows.append([(1, p.step, builder.position[i], stat.value, v) for (i, stat), v in derived.items()
                                     if i in builder.position])
                    t1 = time.thread_time()
                    new_rows.append(builder.build(p))
                    t2 = time.thread_time()
                    old_t.append(t1 - t0)
                    new_t.append(t2 - t1)
        most = max(len(p.keys) for p in records)
        full = [2 * len(p.keys) > most for p in records]  # the cheap tier's steps have a fraction of the partials
        tiers = {"all": [True] * len(records), "full": full, "cheap": [not f for f in full]}
        out = {"steps": len(records), "values_per_step": sum(map(len, old_rows)) / len(records)}
        for tier, chosen in tiers.items():
            if any(chosen):
                out[tier] = _tier_cost(Path(tmp), tier, chosen * rounds, old_t, new_t,
                                       [r for r, c in zip(old_rows, chosen) if c], [r for r, c in zip(new_rows, chosen) if c])
    return out


def _tier_cost(tmp: Path, tier: str, chosen: list[bool], old_t: list[float], new_t: list[float],
               old_rows: list[list], new_rows: list[dict]) -> dict:
    """Medians (and min-max) of the chosen steps' build times, plus each store's SQL per step."""
    from graddoctor.store.schema import APPLICATION_ID, DDL_V1
    from graddoctor.store.sqlite import RunStore

    old_t = [t for t, c in zip(old_t, chosen) if c]
    new_t = [t for t, c in zip(new_t, chosen) if c]
    store = RunStore(tmp / f"new_{tier}.db")
    run_id = store.create_run("b", {}, {})
    t0 = time.thread_time()
    store.write(run_id, steps=[r["steps"][0] for r in new_rows], stats=[r["stats"][0] for r in new_rows])
    new_sql = (time.thread_time() - t0) / len(new_rows)
    store.close()
    con = sqlite3.connect(tmp / f"old_{tier}.db")
    con.executescript(f"BEGIN; {DDL_V1} PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version=1; COMMIT;")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    t0 = time.thread_time()
    with con:
        con.executemany("INSERT OR REPLACE INTO stats VALUES (?, ?, ?, ?, ?)",
                        [r[:4] + ((None if r[4] != r[4] else r[4]),) for rows in old_rows for r in rows])
    old_sql = (time.thread_time() - t0) / len(old_rows)
    con.close()
    med = lambda xs: sorted(xs)[len(xs) // 2] * 1e3  # noqa: E731
    old_ms, new_ms = med(old_t) + old_sql * 1e3, med(new_t) + new_sql * 1e3
    return {"steps": len(old_rows), "values_per_step": sum(map(len, old_rows)) / len(old_rows),
            "old_build_ms": med(old_t), "new_build_ms": med(new_t),
            "old_build_range_ms": (1e3 * min(old_t), 1e3 * max(old_t)), "new_build_range_ms": (1e3 * min(new_t), 1e3 * max(new_t)),
            "old_sql_ms": old_sql * 1e3, "new_sql_ms": new_sql * 1e3,
            "old_steps_per_s": 1e3 / old_ms, "new_steps_per_s": 1e3 / new_ms, "speedup": old_ms / new_ms,
            "speedup_min": (min(old_t) + old_sql) / (min(new_t) + new_sql)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="*", default=[1000], help="run lengths to write and read "
                    "(none: only --build)")
    ap.add_argument("--old-steps", type=int, default=2000, help="steps written in the old layout (default 2000)")
    ap.add_argument("--verbs", default="show,series,diagnose,report,export")
    ap.add_argument("--build", action="store_true", help="also time RowBuilder.build on a real 400-layer model")
    ap.add_argument("--keep", help="keep the stores in this folder")
    args = ap.parse_args(argv)
    if args.build:
        b = build_cost()
        print(f"writer thread CPU per recorded step, real 400-layer MLP ({b['steps']} steps, "
              f"{b['values_per_step']:.0f} values each on average):")
        for tier in ("all", "full", "cheap"):
            if tier not in b:
                continue
            t = b[tier]
            print(f"  {tier} ({t['steps']} steps, {t['values_per_step']:.0f} values each):")
            print(f"    old: build {t['old_build_ms']:.2f} ms (min-max {t['old_build_range_ms'][0]:.2f}-"
                  f"{t['old_build_range_ms'][1]:.2f}) + v1 SQL {t['old_sql_ms']:.2f} ms -> {t['old_steps_per_s']:.0f} steps/s")
            print(f"    new: build {t['new_build_ms']:.2f} ms (min-max {t['new_build_range_ms'][0]:.2f}-"
                  f"{t['new_build_range_ms'][1]:.2f}) + v3 SQL {t['new_sql_ms']:.2f} ms -> {t['new_steps_per_s']:.0f} steps/s "
                  f"({t['speedup']:.1f}x; with the fastest build of each: {t['speedup_min']:.1f}x)")
        sys.stdout.flush()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="store_scale_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        for n in args.steps:
            path = root / f"v3_{n}.db"
            for p in root.glob(f"v3_{n}.db*"):
                p.unlink()
            w3 = write_v3(path, n)
            values = int(recorded_mask().sum()) * n
            size = path.stat().st_size
            old_n = min(n, args.old_steps)
            old_path = root / f"v1_{n}.db"
            for p in root.glob(f"v1_{n}.db*"):
                p.unlink()
            w1 = write_v1(old_path, old_n)
            old_size = old_path.stat().st_size
            old_path.unlink()
            print(f"{n} steps x {N_LAYERS} layers, {values / n / N_LAYERS:.2f} values per layer per step")
            print(f"  v3: {size / values:.2f} bytes/value ({size / 1e6:.1f} MB), writer {w3['steps_per_s']:.0f} steps/s "
                  f"(close {w3['close_s']:.2f} s, producer blocked {w3['blocked_s']:.2f} s, cpu {w3['cpu_s']:.1f} s)")
            print(f"  v1 (old layout, first {old_n} steps): {old_size / (values / n * old_n):.2f} bytes/value, "
                  f"writer {w1['steps_per_s']:.1f} steps/s -> v3/v1 = {w3['steps_per_s'] / w1['steps_per_s']:.0f}x")
            out = root / f"out_{n}"
            out.mkdir(exist_ok=True)
            for verb in filter(None, args.verbs.split(",")):
                r = run_verb(verb, path, out, n)
                if "error" in r:
                    print(f"  {verb:9s} FAILED: {r['error']}")
                else:
                    print(f"  {verb:9s} {r['wall_s']:7.2f} s, cpu {r['cpu_s']:6.2f} s (+ {r['import_s']:.1f} s of imports)  "
                          f"peak RSS {r['peak_mb']:5.0f} MB  (exit {r['rc']})")
            shutil.rmtree(out)
            sys.stdout.flush()
    finally:
        if not args.keep:
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        child(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(main())
