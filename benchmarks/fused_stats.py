"""What the activation partials of one layer output cost: the reference kernels, the fused eager path,
and (--compile) the same partials as one torch.compile'd function. Prints every number that
docs/overhead.md ("Fused statistics") quotes.

    python benchmarks/fused_stats.py [--rounds 7] [--threads 1] [--hooks] [--compile]

Times are CPU time of the calling thread (time.thread_time), so that a loaded shared machine
descheduling the process does not count; wall time on an idle machine is close to it (1 thread).

1. Per output: microseconds per call (median and min-max over interleaved rounds) and the aten ops
   per call (a TorchDispatchMode), for a tanh output 256x512 (the reference MLP's) and a ReLU
   output 64x64x32x32 (channels first), on the "reference" and "fused" paths of probes/fused.py.
2. --hooks: the reference MLP (benchmarks/overhead.py's mlp) at a full-tier step: milliseconds per
   step in the forward hooks and in the dL/d output hooks, both paths alternated in one process.
3. --compile: one function computing every partial of a tanh output under torch.compile
   (inductor's C++ backend on CPU, dynamic=True): first-call (compile) wall and CPU time, the
   time of a call vs the eager paths, recompiles over four shapes, and the aten ops a
   TorchDispatchMode sees (under a dispatch mode compiled code runs eagerly).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import graddoctor
from graddoctor.config import WatchConfig
from graddoctor.probes import fused
from graddoctor.probes.select import SATURATION

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402


class Ops(TorchDispatchMode):
    """Counts aten ops; with `only` given, only those dispatched while only["on"] is set."""

    def __init__(self, only: dict | None = None) -> None:
        super().__init__()
        self.n, self.only = 0, only

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += self.only is None or bool(self.only["on"])
        return func(*args, **(kwargs or {}))


class Layer:
    """The few LayerPlan fields the readers use."""

    def __init__(self, saturation, nonnegative: bool, name: str) -> None:
        self.saturation, self.nonnegative, self.counts_zeros, self.name = saturation, nonnegative, True, name


CLOCK = time.thread_time  # CPU time of this thread: a shared, loaded machine descheduling us does not count


def per_call(fn, reps: int) -> float:
    fn()
    t0 = CLOCK()
    for _ in range(reps):
        fn()
    return (CLOCK() - t0) / reps * 1e6


def interleaved(cands: dict, rounds: int, reps: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in cands}
    for r in range(rounds):
        for k, fn in (list(cands.items()) if r % 2 == 0 else list(cands.items())[::-1]):
            out[k].append(per_call(fn, reps))
    return out


def show(name: str, times: list[float], extra: str = "") -> None:
    print(f"  {name:28s} {statistics.median(times):10.1f} us  ({min(times):.1f}-{max(times):.1f}){extra}")


def outputs() -> list[tuple[str, torch.Tensor, Layer, int]]:
    gen = torch.Generator().manual_seed(0)
    tanh = torch.randn(256, 512, generator=gen).tanh()
    relu = torch.randn(64, 64, 32, 32, generator=gen).relu()
    return [("tanh 256x512", tanh, Layer(SATURATION[torch.nn.Tanh](None), False, "tanh"), -1),
            ("relu 64x64x32x32", relu, Layer(None, True, "relu"), 1)]


def per_output(rounds: int) -> None:
    print("1. one output, per call")
    for label, y, layer, dim in outputs():
        readers = {p: fused.OutputReader(p) for p in fused.PATHS}
        reps = 200 if y.numel() < 1e6 else 10
        cands = {p: (lambda r=r: r.output(y, layer, dim)) for p, r in readers.items()}
        cands["one sum (a pass)"] = lambda: y.sum()
        times = interleaved(cands, rounds, reps)
        print(f" {label}")
        for k, v in times.items():
            ops = ""
            if k in readers:
                with Ops() as c:
                    readers[k].output(y, layer, dim)
                ops = f"  {c.n} ops"
            show(k, v, ops)


def hooks(rounds: int, steps: int = 6) -> None:
    """Forward and dL/d output hook time per full-tier step of the reference MLP, per path."""
    from graddoctor.probes.monitor import Run

    spent: dict[str, float] = {}
    inside = {"on": False}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = CLOCK()
            inside["on"] = True
            try:
                return fn(*args, **kwargs)
            finally:
                inside["on"] = False
                spent[name] = spent.get(name, 0.0) + CLOCK() - t0
        return wrapper

    originals = {n: getattr(Run, n) for n in ("_on_forward", "_on_out_grad")}
    for n, fn in originals.items():
        setattr(Run, n, timed(n, fn))
    torch.manual_seed(0)
    model, x, y = overhead.mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    results: dict[str, dict[str, list[float]]] = {p: {"forward": [], "out_grad": [], "ops": []} for p in fused.PATHS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                for path in (fused.PATHS if r % 2 == 0 else fused.PATHS[::-1]):
                    cfg = WatchConfig(hist_every=0, full_every=1, stats=path)
                    with graddoctor.watch(model, opt, store=Path(tmp) / "f.db", config=cfg):
                        for _ in range(2):
                            overhead.train_step(model, opt, x, y)
                        spent.clear()
                        for _ in range(steps):
                            overhead.train_step(model, opt, x, y)
                        results[path]["forward"].append(spent["_on_forward"] / steps * 1e3)
                        results[path]["out_grad"].append(spent["_on_out_grad"] / steps * 1e3)
                        with Ops(inside) as c:
                            overhead.train_step(model, opt, x, y)
                        results[path]["ops"].append(c.n)
    finally:
        for n, fn in originals.items():
            setattr(Run, n, fn)
    print(f"2. reference MLP, full tier every step, ms per step in the hooks ({rounds} rounds x {steps} steps)")
    for path, res in results.items():
        print(f"  {path:10s} forward hooks {statistics.median(res['forward']):6.2f} ms "
              f"({min(res['forward']):.2f}-{max(res['forward']):.2f}), dL/d output hooks "
              f"{statistics.median(res['out_grad']):6.2f} ms ({min(res['out_grad']):.2f}-{max(res['out_grad']):.2f}); "
              f"aten ops in these hooks per step {res['ops'][0]}")


def tanh_partials(y: torch.Tensor, hi: float):
    flat = y.reshape(-1)
    shift = torch.nan_to_num(flat[0], nan=0.0, posinf=0.0, neginf=0.0)
    d = flat - shift
    a = y.abs()
    return (shift, d.sum(), (d * d).sum(), torch.sign(a).sum(dtype=torch.float32), a.amax(0),
            torch.sign(torch.threshold(a, hi, 0.0)).sum(dtype=torch.float32))


def compiled(rounds: int) -> None:
    from torch._dynamo.utils import counters

    print("3. torch.compile (inductor, dynamic=True) of every partial of a tanh output")
    fn = torch.compile(tanh_partials, dynamic=True)
    y = outputs()[0][1]
    t0, c0 = time.perf_counter(), time.process_time()
    fn(y, 0.99)
    print(f"  first call (compiles): {time.perf_counter() - t0:.1f} s wall, {time.process_time() - c0:.1f} s CPU "
          "in this process (inductor's C++ builds run in worker processes besides)")
    for shape in ((128, 512), (256, 256), (64, 64 * 16 * 16), (1000, 10)):
        t0 = time.perf_counter()
        fn(torch.randn(shape).tanh(), 0.99)
        print(f"  shape {shape}: {time.perf_counter() - t0:.2f} s")
    print(f"  frames compiled over 5 shapes: {counters['stats'].get('unique_graphs', 0)} graph(s)")
    layer = Layer((-0.99, 0.99), False, "tanh")
    readers = {p: fused.OutputReader(p) for p in fused.PATHS}
    cands = {p: (lambda r=r: r.output(y, layer, -1)) for p, r in readers.items()}
    cands["compiled"] = lambda: fn(y, 0.99)
    for k, v in interleaved(cands, rounds, 200).items():
        show(k, v)
    with Ops() as c:
        fn(y, 0.99)
    print(f"  aten ops a dispatch mode sees in a compiled call: {c.n} (compiled code falls back to eager under a mode)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hooks", action="store_true", help="the reference MLP's hook time per path")
    ap.add_argument("--compile", action="store_true", help="torch.compile of the partials (slow: compiles)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), rounds={args.rounds}")
    per_output(args.rounds)
    if args.hooks:
        hooks(args.rounds)
    if args.compile:
        compiled(args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
