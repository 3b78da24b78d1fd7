"""How far update_ratio_est (watch's default) is from the exact update_ratio, measured over training.

    python benchmarks/update_estimate.py [--steps 60] [--models mlp,cnn,gpt,gpt2,lstm_lm] [--opts sgd,adam]

For each model and optimizer it trains from a fixed seed and, at every step, computes per layer
(the parameters a module owns directly, as watch's layers) the exact ||w_after - w_before||^2 from a
full copy, and the estimate watch records by default (probes.stats.sample_snapshot /
sample_update_sumsq: a fixed strided sample of ~1/67 of each parameter's elements, parameters of
at most 4096 elements whole). update_ratio_est / update_ratio = sqrt(estimate / exact) (the same
||w|| divides both), so it prints the relative error |sqrt(estimate / exact) - 1| over every
(layer, step) with a nonzero update: median, 90th percentile and max, over the layers that are
sampled (layers sampled whole are exact: error 0, left out). Data: sklearn's digits for the MLP and
the CNN; characters of Python's own stdlib sources for the language models (`gpt2`: a 2-layer
GPT2LMHeadModel from transformers' GPT2Config, vocabulary 50257 with the embedding tied to the
head, fed byte values: only the rows of the few hundred byte tokens are ever updated, the sparse
case).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from graddoctor.probes import stats


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    return x, torch.tensor(d.target)


def _chars(n: int = 400_000) -> torch.Tensor:
    """Bytes of the stdlib's own sources (no download), as int64 ids < 128."""
    root = Path(statistics.__file__).parent
    text = b""
    for path in sorted(root.glob("*.py")):
        text += path.read_bytes()
        if len(text) >= n:
            break
    return torch.tensor(list(text[:n]), dtype=torch.int64).clamp_(max=127)


class _CharLSTM(nn.Module):
    def __init__(self, vocab: int = 128, hidden: int = 256) -> None:
        super().__init__()
        self.emb, self.rnn, self.head = nn.Embedding(vocab, 64), nn.LSTM(64, hidden, batch_first=True), nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(x))[0]).flatten(0, 1)


def _batches(kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    if kind == "digits":
        x, y = _digits()
        while True:
            idx = torch.randint(0, len(x), (128,), generator=g)
            yield x[idx], y[idx]
    ids = _chars()
    while True:
        start = torch.randint(0, len(ids) - 65, (16,), generator=g)
        seq = torch.stack([ids[s:s + 65] for s in start.tolist()])
        yield seq[:, :-1], seq[:, 1:].flatten()


def build(name: str) -> tuple[nn.Module, str, object]:
    """(model, data kind, forward): forward(model, x) returns logits [rows, classes]."""
    if name == "mlp":
        layers: list[nn.Module] = [nn.Linear(64, 512), nn.Tanh()]
        for _ in range(8):
            layers += [nn.Linear(512, 512), nn.Tanh()]
        return nn.Sequential(*layers, nn.Linear(512, 10)), "digits", lambda m, x: m(x)
    if name == "cnn":  # ResNet-like stem of 3x3 convolutions with BatchNorm (filters: [out, in, 3, 3])
        chans, layers = [1, 32, 64, 64, 128], []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
        return model, "digits", lambda m, x: m(x.view(-1, 1, 8, 8))
    if name == "gpt":  # the overhead benchmark's GPT-style model: qkv in one Linear, tied embeddings
        sys.path.insert(0, str(Path(__file__).parent))
        from overhead import _GPT

        return _GPT(vocab=128), "chars", lambda m, x: m(x)
    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=64)  # vocab 50257, wte tied to lm_head
        return GPT2LMHeadModel(cfg), "chars", lambda m, x: m(x).logits.flatten(0, 1)
    if name == "lstm_lm":
        return _CharLSTM(), "chars", lambda m, x: m(x)
    raise SystemExit(f"unknown model {name!r}")


def layers_of(model: nn.Module) -> list[list[torch.Tensor]]:
    """Trainable parameters grouped by the module that owns them directly (a tied one counted once)."""
    seen, out = set(), []
    for _, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in own)
        if own:
            out.append(own)
    return out


def errors(name: str, opt_name: str, steps: int) -> tuple[list[float], int, int]:
    """Relative errors of every (sampled layer, step), and the numbers of sampled / exact layers."""
    torch.manual_seed(0)
    model, kind, forward = build(name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, lr=1e-3) if opt_name == "adam" else torch.optim.SGD(params, lr=0.05))
    groups = layers_of(model)
    plan_of = {}
    for layer in groups:
        plan = stats.sample_plan([p.shape for p in layer])
        plan_of[id(layer[0])] = (plan, stats.sample_scales([p.shape for p in layer], plan))
    sampled = [layer for layer in groups if any(s != 1 for _, s in plan_of[id(layer[0])][0])]
    out = []
    data = _batches(kind, seed=1)
    for _ in range(steps):
        x, y = next(data)
        loss = nn.functional.cross_entropy(forward(model, x), y)
        opt.zero_grad()
        loss.backward()
        before = [[p.detach().clone() for p in layer] for layer in sampled]
        samples = [stats.sample_snapshot(layer, plan_of[id(layer[0])][0]) for layer in sampled]
        opt.step()
        for layer, copy, sample in zip(sampled, before, samples):
            plan, scales = plan_of[id(layer[0])]
            exact = sum(float(torch.sum((p.detach().double() - c.double()) ** 2)) for p, c in zip(layer, copy))
            est = sum(float(v) for v in stats.sample_update_sumsq(sample, layer, plan, scales))
            if exact > 0:
                out.append(abs(np.sqrt(est / exact) - 1.0))
    return out, len(sampled), len(groups) - len(sampled)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--models", default="mlp,cnn,gpt,gpt2,lstm_lm")
    ap.add_argument("--opts", default="sgd,adam")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}; {args.steps} steps; relative error of update_ratio_est against update_ratio "
          f"over (sampled layer, step): median, p90, max")
    print(f"{'model':8} {'opt':5} {'median':>8} {'p90':>8} {'max':>8}  layers")
    for name in args.models.split(","):
        for opt_name in args.opts.split(","):
            errs, n_sampled, n_exact = errors(name, opt_name, args.steps)
            e = np.asarray(errs)
            print(f"{name:8} {opt_name:5} {np.median(e):8.2%} {np.quantile(e, 0.9):8.2%} {e.max():8.2%}  "
                  f"{n_sampled} sampled, {n_exact} whole (exact); {e.size} values", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
