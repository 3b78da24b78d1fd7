"""What the parameter side of a recorded step costs at best: the kernels of probes.stats, timed alone.

On the overhead benchmark's MLP (20 Linear layers, 784/512 -> 512: 20.6 MiB of float32 parameters),
times the three parameter-side reductions of a recorded step with warm caches and nothing else
running: gradient norms, the weight snapshot with its sum of squares (what update_ratio="exact" needs
before the step) and ||w_after - w_before||^2 after it, the weight norms alone, and the default's
sample (update_ratio_est: ~1/67 of the elements copied before the step) and its estimate after it. In a real step the caches are cold and the same
work costs about twice as much (`overhead.py --breakdown`). Medians of 30 calls, in ms.

    python benchmarks/param_floor.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from graddoctor.probes import stats


def median_ms(fn, n: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2] * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = nn.Sequential(*[nn.Linear(784 if i == 0 else 512, 512) for i in range(20)])
    params = list(model.parameters())
    grads = [torch.randn_like(p) for p in params]
    snapshot = [torch.empty_like(p) for p in params]
    scratch = stats.Scratch()
    plan = stats.sample_plan([p.shape for p in params])
    scales = stats.sample_scales([p.shape for p in params], plan)
    box = {"s": stats.sample_snapshot(params, plan)}
    mib = sum(p.numel() for p in params) * 4 / 2**20
    print(f"torch {torch.__version__}, {args.threads} threads; {mib:.1f} MiB of parameters")
    rows = [
        ("gradient norms (one read)", lambda: stats.norms(grads)),
        ("snapshot + ||w||^2 (before the step)", lambda: stats.snapshot_sumsq(snapshot, params)),
        ("||w_after - w_before||^2 (after)", lambda: stats.update_sumsq(snapshot, params, scratch)),
        ("weight norms without the snapshot", lambda: stats.norms(params)),
        ("sample (update_ratio_est, before)", lambda: box.__setitem__("s", stats.sample_snapshot(params, plan))),
        ("sampled ||dw||^2 estimate (after)", lambda: stats.sample_update_sumsq(box["s"], params, plan, scales)),
    ]
    for label, fn in rows:
        print(f"{label:40s} {median_ms(fn):7.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
