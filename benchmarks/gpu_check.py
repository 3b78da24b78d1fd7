"""One short check on a CUDA machine: correct numbers, no hidden syncs, overhead.

    python benchmarks/gpu_check.py

1. The same seeded run on CPU and on CUDA records the same statistics (float32 tolerance).
2. With torch.cuda.set_sync_debug_mode("warn"), a watched step causes exactly one synchronising
   call per recorded step (the transfer), full-tier or cheap, and none on unrecorded steps.
1b. The fused activation partials (probes/fused.py) equal the reference kernels' on CUDA, bit for
   bit, on edge tensors too (torch.sign(NaN), threshold_ of NaN, take at a 0-d index on the device).
3. Step-time ratio watched/unwatched (interleaved blocks A B / B A, block means, median [min, max])
   for the overhead MLP in overhead.py's modes (default, cheap, full, full/10), with AMP (bf16
   autocast) and without. Targets (issue 16): default <= 1.05x, full (a full-tier step) <= 1.5x.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import graddoctor  # noqa: E402
from overhead import mlp, watch_options  # noqa: E402


def small(device: str) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 8 * 8, 32), nn.Tanh(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 4),
    ).to(device)
    with torch.no_grad():
        model[1].bias[:2] = -50.0  # BatchNorm shift: two dead channels after the ReLU
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def record(device: str) -> graddoctor.store.RunView:
    model, opt = small(device)
    gen = torch.Generator().manual_seed(1)
    with graddoctor.watch(model, opt, hist_every=2) as run:
        for _ in range(4):
            x = torch.randn(16, 3, 8, 8, generator=gen).to(device)
            y = torch.randint(0, 4, (16,), generator=gen).to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
        return graddoctor.load(run)


def check_same_numbers() -> bool:
    cpu, gpu = record("cpu"), record("cuda")
    worst = 0.0
    for stat in cpu.stats:
        a, b = cpu.stat_matrix(stat), gpu.stat_matrix(stat)
        assert np.array_equal(np.isnan(a), np.isnan(b)), stat
        diff = np.nanmax(np.abs(a - b) / (np.abs(a) + 1e-6)) if np.isfinite(a).any() else 0.0
        worst = max(worst, float(diff))
        print(f"  {stat:15} max rel diff CPU vs CUDA {diff:.2e}")
    ok = worst < 5e-3 and cpu.layers == gpu.layers
    print(f"1. same numbers on CPU and CUDA: {'OK' if ok else 'FAIL'} (worst {worst:.1e})")
    return ok


def check_fused_partials() -> bool:
    from graddoctor.probes import fused

    class Layer:
        def __init__(self, saturation, nonnegative=False):
            self.saturation, self.nonnegative, self.counts_zeros, self.name = saturation, nonnegative, True, "edge"

    gen = torch.Generator().manual_seed(0)
    tensors = [torch.randn(256, 512, generator=gen).tanh(), torch.randn(8, 16, 4, 4, generator=gen).relu(),
               torch.tensor([[float("nan"), 1.0], [0.0, 0.995]]), torch.tensor([[float("inf"), 1.0], [0.0, -2.0]]),
               50.0 + 0.03 * torch.randn(64, 8, generator=gen)]
    ok = True
    for y in tensors:
        for layer, dim in ((Layer((-0.99, 0.99)), -1), (Layer((0.01, 0.99), True), 1), (Layer((-0.5, None)), -1)):
            y_cuda = y.cuda()
            a = fused.OutputReader("fused").output(y_cuda, layer, dim)
            b = fused.OutputReader("reference").output(y_cuda, layer, dim)
            c = fused.OutputReader("reference").output(y, layer, dim)
            for (code, x), (_, r), (_, h) in zip(a, b, c):
                same = torch.equal(x.nan_to_num(123.0), r.nan_to_num(123.0))
                close = torch.allclose(x.cpu().nan_to_num(123.0), h.nan_to_num(123.0), rtol=1e-4, atol=1e-3)
                ok &= same and close
                if not (same and close):
                    print(f"  {tuple(y.shape)} {code}: fused {x.tolist()} reference {r.tolist()} cpu {h.tolist()}")
    print(f"1b. fused partials equal the reference's on CUDA (and the CPU's within 1e-4): {'OK' if ok else 'FAIL'}")
    return ok


def check_syncs() -> bool:
    model, opt = small("cuda")
    x = torch.randn(16, 3, 8, 8, device="cuda")
    y = torch.randint(0, 4, (16,), device="cuda")
    counts = []
    # steps 0, 2, 4, 6, 8 recorded; 0 and 6 with the full tier, 2, 4, 8 with the cheap one
    with graddoctor.watch(model, opt, every=2, full_every=6, full_first=1, hist_every=0) as run:
        for step in range(9):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                run.log(loss=loss)
                torch.cuda.set_sync_debug_mode(0)
            syncs = [str(w.message)[:80] for w in caught if "called a synchronizing" in str(w.message)]
            counts.append(len(syncs))
            print(f"  step {step} ({'recorded' if step % 2 == 0 else 'skipped '}): {len(syncs)} sync(s) {syncs[:3]}")
    ok = all(c <= 1 for c in counts[0::2]) and all(c == 0 for c in counts[1::2])
    print(f"2. one sync per recorded step, none otherwise: {'OK' if ok else 'FAIL'} {counts}")
    return ok


def overhead(mode: str, amp: bool, rounds: int = 6, steps: int = 20) -> list[float]:
    torch.manual_seed(0)
    model, x, y = mlp()
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def block(n: int, run=None) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if run is not None:
                run.log(loss=loss)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    block(5)
    ratios = []
    options = {"hist_every": 0, **watch_options(mode)}
    for r in range(rounds):
        times = {}
        for which in ("A", "B") if r % 2 == 0 else ("B", "A"):
            if which == "A":
                times[which] = block(steps)
                continue
            with graddoctor.watch(model, opt, **options) as run:
                block(1 + run.config.full_first * run.config.every, run)  # the run's full-tier start, untimed
                times[which] = block(steps, run)
        ratios.append(times["B"] / times["A"])
    return ratios


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    ok = check_same_numbers()
    ok &= check_fused_partials()
    ok &= check_syncs()
    print("3. overhead, MLP 20x512 batch 256 (ratio of block means watched/unwatched: median [min, max])")
    for amp in (False, True):
        for mode in ("default", "cheap", "full", "full/10"):
            r = overhead(mode, amp)
            print(f"  amp={amp!s:5} {mode:8}: {statistics.median(r):.3f} [{min(r):.3f}, {max(r):.3f}]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
