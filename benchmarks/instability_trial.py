"""The instability rules by hand on real architectures, healthy and broken; prints what fired.

    python benchmarks/instability_trial.py [--steps 60]

ResNet-18-like CNN on sklearn digits (1x8x8, upsampled to 16x16), a small ViT (transformers' ViTConfig,
no weights) on the same digits, transformers' GPT-2 tiny on a stdlib-source character corpus; each
healthy (a sane rate, warm-up where the field uses it) and broken (a rate far too high, no warm-up).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import torch
import torch.nn.functional as F
from torch import nn

import graddoctor


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return F.interpolate(x, size=16, mode="bilinear"), torch.tensor(d.target)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                                           nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.down is None else self.down(x)))


def resnet18_like(width=16, classes=10):
    layers, cin = [nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()], width
    for k, cout in enumerate([width, 2 * width, 4 * width, 8 * width]):
        for j in range(2):
            layers.append(BasicBlock(cin, cout, 2 if (j == 0 and k > 0) else 1))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def vit():
    import transformers

    cfg = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=64, num_hidden_layers=4,
                                 num_attention_heads=4, intermediate_size=128, num_labels=10,
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.ViTForImageClassification(cfg)


def gpt2():
    import transformers

    cfg = transformers.GPT2Config(vocab_size=128, n_positions=64, n_embd=64, n_layer=4, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(cfg)


def corpus(n=200_000):
    text = "".join(p.read_text(errors="ignore") for p in sorted(pathlib.Path(argparse.__file__).parent.glob("*.py"))[:40])
    return torch.tensor([min(ord(c), 127) for c in text[:n]])


def train(name, model, lr, warmup, steps, batches, opt="adamw"):
    torch.manual_seed(0)
    o = torch.optim.AdamW(model.parameters(), lr=lr) if opt == "adamw" else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    losses = []
    with graddoctor.watch(model, o, name=name) as run:
        for step in range(steps):
            x, y = batches(step)
            out = model(x)
            logits = getattr(out, "logits", out)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            o.zero_grad()
            loss.backward()
            o.step()
            sched.step()
            run.log(loss=loss)
            losses.append(float(loss.detach()))
    d = graddoctor.diagnose(run)
    print(f"{name}: loss {losses[0]:.2f} -> {losses[-1]:.2f} (max {max(losses):.2f})")
    for f in d.findings:
        print(f"   {f.severity!s:7} {f.kind!s:26} steps {f.step_range} remedies {[a.id for a in f.remedies][:3]}")
    if not d.findings:
        print("   no finding")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--only", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, y = digits()

    def image_batches(step):
        g = torch.Generator().manual_seed(step)
        idx = torch.randint(len(x), (64,), generator=g)
        return x[idx], y[idx]

    text = corpus()

    def text_batches(step):
        g = torch.Generator().manual_seed(step)
        start = torch.randint(len(text) - 33, (16,), generator=g)
        seq = torch.stack([text[s:s + 33] for s in start])
        return seq[:, :-1], seq[:, 1:]

    trials = [
        ("resnet18-sgd0.05", resnet18_like, 0.05, 0, image_batches, "sgd"),
        ("resnet18-sgd5", resnet18_like, 5.0, 0, image_batches, "sgd"),
        ("vit-adamw1e-3-warmup", vit, 1e-3, 10, image_batches, "adamw"),
        ("vit-adamw3e-2", vit, 3e-2, 0, image_batches, "adamw"),
        ("gpt2-adamw1e-3-warmup", gpt2, 1e-3, 10, text_batches, "adamw"),
        ("gpt2-adamw1e-1", gpt2, 1e-1, 0, text_batches, "adamw"),
    ]
    for name, build, lr, warmup, batches, opt in trials:
        if args.only and args.only not in name:
            continue
        train(name, build(), lr, warmup, args.steps, batches, opt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
