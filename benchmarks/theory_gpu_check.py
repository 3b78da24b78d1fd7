"""graddoctor.predict on CUDA models: the same prediction as on CPU, and theory vs measurement on the GPU.

    python benchmarks/theory_gpu_check.py [--device cuda]

For a few MLPs (width 1024, depth 20, batch 256; one Linear-BatchNorm1d-ReLU) it predicts on a CPU
copy and on the CUDA model (float64 and float32), checks that the predictions agree and that
predicting left the model as it was (device, parameters, BatchNorm statistics, training mode),
and compares the per-layer factor of out_grad_norm^2 measured on the device by graddoctor.watch
with the predicted one.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import graddoctor  # noqa: E402
from theory_vs_measured import factor, init_, measured_log_norms, mlp  # noqa: E402

CASES = [("tanh", "default", False), ("relu", "he", False), ("gelu", "xavier", False), ("relu", "default", True)]


def rel_norms(p: graddoctor.theory.Prediction) -> np.ndarray:
    return np.array([lp.rel_out_grad_norm for lp in p.layers])


def check(act: str, scheme: str, bn: bool, device: str) -> tuple[str, bool]:
    torch.manual_seed(0)
    cpu = mlp(act, 20, 1024, bn).double()
    init_(cpu, scheme)
    x, r = torch.randn(256, 1024, dtype=torch.float64), torch.randn(256, 1024, dtype=torch.float64)
    p_cpu = graddoctor.predict(cpu, inputs=x)
    dev = copy.deepcopy(cpu).to(device)
    state = {k: v.clone() for k, v in dev.state_dict().items()}
    start = time.perf_counter()
    p_dev = graddoctor.predict(dev, inputs=x.to(device))
    seconds = time.perf_counter() - start
    p_f32 = graddoctor.predict(copy.deepcopy(cpu).float().to(device), inputs=x.float().to(device))
    untouched = all(torch.equal(state[k], v) for k, v in dev.state_dict().items()) and dev.training
    untouched = untouched and all(p.device.type == torch.device(device).type for p in dev.parameters())
    same = np.allclose(rel_norms(p_cpu), rel_norms(p_dev), rtol=1e-9)
    same32 = np.allclose(rel_norms(p_cpu), rel_norms(p_f32), rtol=1e-4)
    skip = (1, 2) if bn else (0, 0)
    measured = factor(measured_log_norms(dev, x.to(device), r.to(device)), skip)
    predicted = factor(np.log(rel_norms(p_dev) ** 2), skip)
    ok = same and same32 and untouched and abs(measured / predicted - 1) < 0.05
    name = f"{act}{'+bn' if bn else ''}/{scheme}"
    return (f"{name:<14} cpu==dev {same!s:<5} f32 {same32!s:<5} untouched {untouched!s:<5} predict {seconds:5.2f} s  "
            f"factor predicted {predicted:.4f} measured {measured:.4f} ({100 * (measured / predicted - 1):+.1f} %)"), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    results = [check(*case, args.device) for case in CASES]
    for line, _ in results:
        print(line)
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
