"""Mean-field prediction vs measurement: per-layer growth of ||dL/dh||^2 at initialization.

    python benchmarks/theory_vs_measured.py [--seeds 5] [--width 512] [--batch 128] [--quick]

For plain MLPs (width 512, depth 10 and 30 Linear layers; Xavier, He and PyTorch-default init;
ReLU, LeakyReLU(0.2), tanh, sigmoid, erf, SELU, GELU) it records one step with graddoctor.watch,
takes `out_grad_norm` of every Linear (the pre-activation gradient ||dL/dh||), fits the
least-squares slope of log ||dL/dh||^2 against the layer index, and turns it into a per-layer
factor (||dL/dh_l||^2 / ||dL/dh_{l+1}||^2, < 1: shrinking toward the input). The prediction is
graddoctor.predict(model, inputs=x) on the same model (its actual weights) and the same inputs,
with the same fit over its predicted per-layer norms. Both are averaged over seeds.

The loss is a fixed random projection of the output, L = sum_b <r_b, y_b> / B with r_b drawn once
per sample: it does not bias the slope the way MSE to random targets does (a few % per layer).
Models run in float64 so that gradients 1e-40 small still have exact squares.

A second table does the same for a 30-layer Linear-BatchNorm1d-ReLU MLP (width 512, batch 256):
measured growth over the middle layers vs the finite-batch BatchNorm theory (Yang et al. 2019).
Last, for depth-10 He-init ReLU and SELU MLPs, the measured factors of out_grad_norm^2 and of the
weight-gradient norm grad_norm^2 side by side, for a loss with one random projection per sample
and for one shared by all samples (then the cross-sample terms of ||dW||^2 dominate).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

import graddoctor
from graddoctor import theory


class Erf(nn.Module):
    """erf as a module; the class attribute tells graddoctor.predict which nonlinearity it is."""

    graddoctor_activation = "erf"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


ACTIVATIONS = {
    "relu": nn.ReLU, "leaky_relu:0.2": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "erf": Erf, "selu": nn.SELU, "gelu": nn.GELU,
}
NEAR_NEUTRAL = {("gelu", "he")}  # forward dynamics near-neutral: finite-width noise dominates (issue 4)


def init_(model: nn.Module, scheme: str) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear) and scheme != "default":
            if scheme == "xavier":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def mlp(act: str, depth: int, width: int, batchnorm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if i < depth - 1:
            layers += [nn.BatchNorm1d(width)] if batchnorm else []
            layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


def measured_log_norms(model: nn.Module, x: torch.Tensor, r: torch.Tensor, stat: str = "out_grad_norm") -> np.ndarray:
    """log of `stat` squared for every Linear, input side first, from one step recorded by graddoctor.watch."""
    with graddoctor.watch(model, update_ratio=False, hist_every=0) as run:
        loss = (model(x) * r).sum() / x.shape[0]
        loss.backward()
        run.step()
    view = graddoctor.load(run)
    linear = [info.name for info in view.layer_info if info.type == "Linear"]
    return np.array([2 * math.log(view.stat(stat, name)[0]) for name in linear])


def factor(log_norms2: np.ndarray, skip: tuple[int, int] = (0, 0)) -> float:
    """Per-layer factor exp(-slope) of the least-squares line through log ||dL/dh||^2 vs layer."""
    y = log_norms2[skip[0]: len(log_norms2) - skip[1]]
    slope = np.polyfit(np.arange(len(y)), y, 1)[0]
    return float(math.exp(-slope))


def compare(act: str, depth: int, scheme: str, args: argparse.Namespace, skip=(0, 0), batchnorm=False) -> dict:
    measured, predicted = [], []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = mlp(act, depth, args.width, batchnorm).double()
        init_(model, scheme)
        batch = args.bn_batch if batchnorm else args.batch
        x = torch.randn(batch, args.width, dtype=torch.float64)
        r = torch.randn(batch, args.width, dtype=torch.float64)
        measured.append(factor(measured_log_norms(model, x, r), skip))
        p = graddoctor.predict(model, inputs=x)
        predicted.append(factor(np.array([2 * math.log(lp.rel_out_grad_norm) for lp in p.layers]), skip))
    m, pr = statistics.fmean(measured), statistics.fmean(predicted)
    return {"act": act, "depth": depth, "init": scheme, "measured": m, "spread": statistics.pstdev(measured),
            "predicted": pr, "error": m / pr - 1}


def weight_gradients(act: str, args: argparse.Namespace) -> None:
    """out_grad_norm^2 vs grad_norm^2 factors, depth 10, He init: independent vs shared projections."""
    print(f"\n{act}, He init, depth 10: per-layer factor of out_grad_norm^2 (theory's quantity) vs grad_norm^2 (||dW||^2)")
    for shared in (False, True):
        out, weight = [], []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = mlp(act, 10, args.width).double()
            init_(model, "he")
            x = torch.randn(args.batch, args.width, dtype=torch.float64)
            r = torch.randn(1 if shared else args.batch, args.width, dtype=torch.float64).expand(args.batch, -1)
            out.append(factor(measured_log_norms(model, x, r)))
            weight.append(factor(measured_log_norms(model, x, r, "grad_norm")))
        loss = "one projection for all samples" if shared else "a projection per sample"
        print(f"  loss with {loss + ':':<32} out_grad_norm^2 {statistics.fmean(out):.3f}, "
              f"grad_norm^2 {statistics.fmean(weight):.3f}")


def verdict(row: dict, tol: float) -> str:
    if (row["act"], row["init"]) in NEAR_NEUTRAL:
        return "near-neutral"
    return "ok" if abs(row["error"]) <= tol else "MISS"


def print_table(rows: list[dict], tol: float) -> None:
    print(f"{'activation':<15}{'depth':>6}  {'init':<8}{'predicted':>10}{'measured':>10}{'seed sd':>9}{'error':>8}  verdict")
    for row in rows:
        print(f"{row['act']:<15}{row['depth']:>6}  {row['init']:<8}{row['predicted']:>10.4f}{row['measured']:>10.4f}"
              f"{row['spread']:>9.4f}{100 * row['error']:>7.1f}%  {verdict(row, tol)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bn-batch", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="one seed, width 128, depth 10, two activations (a smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small matrices; on a shared 2-core machine two OpenMP threads wait on each other
    depths, acts = (10, 30), list(ACTIVATIONS)
    if args.quick:
        args.seeds, args.width, args.batch, args.bn_batch, depths, acts = 1, 128, 64, 64, (10,), ["relu", "tanh"]
    start = time.perf_counter()
    print(f"per-layer factor of ||dL/dh||^2 (out_grad_norm^2 of each Linear), width {args.width}, batch {args.batch}, "
          f"{args.seeds} seeds; 'ok' = within 5 %\n")
    rows = [compare(a, d, s, args) for d in depths for a in acts for s in ("xavier", "he", "default")]
    print_table(rows, 0.05)
    depth = 10 if args.quick else 30
    bn = compare("relu", depth, "default", args, skip=(1, 2), batchnorm=True)
    print(f"\nBatchNorm: {depth}-layer Linear-BatchNorm1d-ReLU, width {args.width}, batch {args.bn_batch} "
          f"(middle layers); stationary finite-batch theory "
          f"{theory.batchnorm_growth(theory.resolve('relu'), args.bn_batch):.4f}, infinite batch pi/(pi-1) = {math.pi / (math.pi - 1):.4f}")
    print_table([bn], 0.03)
    for act in ("relu", "selu"):
        weight_gradients(act, args)
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
