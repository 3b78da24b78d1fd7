"""`make demo`: the vanishing-gradient problem and its classic remedy, measured with graddoctor.

Two 20-layer MLPs (width 128) train on scikit-learn's digits (1,797 real 8x8 images, shipped with
scikit-learn: no download), watched: sigmoid with PyTorch's default init, and ReLU with He init.
Both use Adam. The per-layer table shows the pre-activation gradient ||dL/dz|| of each Linear
layer at initialization and at the end: it collapses toward the input in the sigmoid net and
stays level in the ReLU/He net. (The lab issue replaces this with the full seed-claims study.)

    python -m graddoctor.demo [--steps 300] [--store demo_runs/demo.db]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

import graddoctor
from graddoctor.report.text import fmt, format_table

DEPTH, WIDTH = 20, 128


def digits(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits, standardised with train statistics; fixed 75/25 split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    n_train = int(0.75 * len(x))
    mean, std = x[:n_train].mean(0), x[:n_train].std(0).clamp_min(1e-6)
    x = (x - mean) / std
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def mlp(activation: type[nn.Module], he_init: bool) -> nn.Sequential:
    dims = [64] + [WIDTH] * (DEPTH - 1) + [10]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(d_in, d_out)
        if he_init:
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < DEPTH - 1:
            layers.append(activation())
    return nn.Sequential(*layers)


def train(name: str, model: nn.Module, data: tuple[torch.Tensor, ...], steps: int, store: Path) -> dict[str, float]:
    x_train, y_train, x_test, y_test = data
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    t0 = time.perf_counter()
    with graddoctor.watch(model, opt, store=store, name=name, config={"depth": DEPTH, "width": WIDTH}) as run:
        for _ in range(steps):
            idx = torch.randint(0, len(x_train), (64,), generator=gen)
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.log(loss=loss)
    with torch.no_grad():
        model.eval()
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        final_loss = nn.functional.cross_entropy(model(x_train), y_train).item()
    return {"seconds": time.perf_counter() - t0, "accuracy": accuracy, "loss": final_loss}


def side_by_side(a: graddoctor.RunView, b: graddoctor.RunView) -> str:
    """Pre-activation gradient of each Linear layer, both runs, at the first and last step."""
    rows = []
    linears = [info.name for info in a.layer_info if info.type == "Linear"]
    for k, layer in enumerate(linears):
        cells = [str(k + 1)]
        for run in (a, b):
            g = run.stat("out_grad_norm", layer)
            cells += [fmt(g[0]), fmt(g[-1]), fmt(run.stat("update_ratio", layer)[-1])]
        rows.append(cells)
    first, last = int(a.steps[0]), int(a.steps[-1])
    headers = ["linear", f"sig dz@{first}", f"sig dz@{last}", "sig upd", f"relu dz@{first}", f"relu dz@{last}", "relu upd"]
    return format_table(headers, rows)


def decay(run: graddoctor.RunView) -> float:
    """First (input side) over last (output side) pre-activation gradient norm at step 0."""
    linears = [info.name for info in run.layer_info if info.type == "Linear"]
    return run.stat("out_grad_norm", linears[0])[0] / run.stat("out_grad_norm", linears[-1])[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--store", type=Path, default=Path("demo_runs/demo.db"))
    args = ap.parse_args(argv)
    args.store.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    data = digits()
    results = {}
    for name, act, he in (("sigmoid-default-init", nn.Sigmoid, False), ("relu-he-init", nn.ReLU, True)):
        torch.manual_seed(0)
        print(f"training {name}: {DEPTH} Linear layers x {WIDTH}, Adam, {args.steps} steps on digits ...", flush=True)
        results[name] = train(name, mlp(act, he), data, args.steps, args.store)
    sig, relu = (graddoctor.load(args.store, name=n) for n in results)
    print()
    print("||dL/dz|| of each Linear layer's output (input side first), and ||dw||/||w|| at the last step:")
    print(side_by_side(sig, relu))
    print()
    for name, run in (("sigmoid-default-init", sig), ("relu-he-init", relu)):
        r = results[name]
        print(
            f"{name:22} first/last layer gradient at init {decay(run):9.2e}   "
            f"train loss {r['loss']:.3f}   test accuracy {r['accuracy']:.3f}   ({r['seconds']:.1f} s)"
        )
    print(f"\nrecorded in {args.store}: try `graddoctor runs {args.store}` and `graddoctor show {args.store} --name relu-he-init`")
    return 0 if math.isfinite(decay(sig)) else 1


if __name__ == "__main__":
    sys.exit(main())
