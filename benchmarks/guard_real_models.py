"""False alarms of guard="default" on real architectures it was not written for: healthy trainings, no warning expected.

    python benchmarks/guard_real_models.py [--steps 80] [--models gpt2,lstm,resnet,vit]

Each model trains `--steps` steps (AdamW with a linear warm-up over the first quarter, or SGD
with momentum for the ResNet-14 written here) on synthetic or local data and the script prints, per model, the warnings and actions the
guard took, the loss at the start and end, and the largest update_ratio seen. Nothing is downloaded:
GPT-2 is built from `transformers`' GPT2Config (no weights), the LSTM is a character LM on
Python's own stdlib sources.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

import graddoctor
from graddoctor.probes.guard import GuardWarning


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=256, n_positions=64))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (8, 64), generator=g)
    return model, lambda m, t: m(tokens, labels=tokens).loss, "adamw"


def lstm():
    import os

    text = Path(os.__file__).read_bytes()[:200_000]
    data = torch.tensor(list(text), dtype=torch.long)

    class CharLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.rnn, self.head = nn.Embedding(256, 64), nn.LSTM(64, 128, batch_first=True), nn.Linear(128, 256)

        def forward(self, x):
            return self.head(self.rnn(self.emb(x))[0])

    def loss(m, t):
        starts = torch.randint(0, len(data) - 65, (16,), generator=torch.Generator().manual_seed(t))
        batch = torch.stack([data[s:s + 65] for s in starts.tolist()])
        return nn.functional.cross_entropy(m(batch[:, :-1]).reshape(-1, 256), batch[:, 1:].reshape(-1))

    return CharLM(), loss, "adamw"


class Block(nn.Module):
    """ResNet's basic block (He et al. 2016): two 3x3 conv + BN, identity or 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.short = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.relu(self.b2(self.c2(self.relu(self.b1(self.c1(x))))) + self.short(x))


def resnet():
    widths = [(16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)]  # ResNet-14 for 32x32
    model = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          *(Block(a, b, s) for a, b, s in widths), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    return model, lambda m, t: nn.functional.cross_entropy(m(x), y), "sgd"


class ViT(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al. 2021): 8x8 patches, pre-norm encoder, class token."""

    def __init__(self, dim: int = 64, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 10))

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos
        return self.head(self.encoder(tokens)[:, 0])


def vit():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    return ViT(), lambda m, t: nn.functional.cross_entropy(m(x), y), "adamw"


MODELS = {"gpt2": gpt2, "lstm": lstm, "resnet": resnet, "vit": vit}


def train(name: str, steps: int, store: Path) -> str:
    torch.manual_seed(0)
    model, loss_fn, kind = MODELS[name]()
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    warm = max(steps // 4, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / warm))
    losses = []
    with warnings.catch_warnings(record=True) as caught, graddoctor.watch(model, opt, store=store, name=name,
                                                                           guard="default") as run:
        warnings.simplefilter("always", GuardWarning)
        for t in range(steps):
            loss = loss_fn(model, t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            run.log(loss=loss)
            losses.append(float(loss))
    view = graddoctor.load(store, name=name)
    ratio = view.stat_matrix("update_ratio")
    ratio_max = float(max((v for v in ratio.ravel() if math.isfinite(v)), default=float("nan")))
    guard_warnings = [str(w.message) for w in caught if issubclass(w.category, GuardWarning)]
    line = (f"{name:7} steps={steps} loss {losses[0]:.3g} -> {losses[-1]:.3g}  max update_ratio {ratio_max:.3g}  "
            f"guard warnings {len(guard_warnings)}  actions {len(view.guard_actions)}")
    return "\n".join([line, *("    " + w for w in guard_warnings[:5])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--models", default="gpt2,lstm,resnet,vit")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(train(name, args.steps, Path(tmp) / "real.db"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
