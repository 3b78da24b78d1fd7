"""Watch a Lightning fit under DDP: `GradDoctorCallback` on every rank, rank 0 writes the store.

    python examples/lightning_ddp.py                  # 2 CPU processes (gloo), a deep tanh MLP, 200 steps
    python examples/lightning_ddp.py --quick          # a few steps: what the tests run
    python examples/lightning_ddp.py --devices 1      # one process
    graddoctor diagnose runs.db --name lightning-ddp

Lightning's strategy="ddp" starts the other ranks by running this script again, so everything
that trains sits under `if __name__ == "__main__"`.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as L
import torch
from torch import nn

import graddoctor
from graddoctor.integrations.lightning import GradDoctorCallback

QUICK_SIZES, FULL_SIZES = (3, 16), (12, 64)  # (depth, width)
CLIP = 1.0


class DeepMLP(L.LightningModule):
    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(16, width), nn.Tanh()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.Tanh()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def data(n: int) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 16, generator=g)
    return torch.utils.data.TensorDataset(x, torch.sin(x[:, :1] * 2) + 0.1 * torch.randn(n, 1, generator=g))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few steps of a small model (what the tests run)")
    p.add_argument("--devices", type=int, default=2, help="CPU processes (default 2)")
    p.add_argument("--store", default="runs.db", help="run store (default runs.db)")
    p.add_argument("--accumulate", type=int, default=2, help="micro-batches per optimizer step (default 2)")
    args = p.parse_args()
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    steps, (depth, width) = (4, QUICK_SIZES) if args.quick else (200, FULL_SIZES)
    model = DeepMLP(depth, width)  # right after seeding: the same weights on every rank, and in the tests' oracle
    loader = torch.utils.data.DataLoader(data(64 * steps * args.accumulate * args.devices), batch_size=32)
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        max_steps=steps, accumulate_grad_batches=args.accumulate, gradient_clip_val=CLIP,
        enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
        callbacks=[GradDoctorCallback(store=args.store, name="lightning-ddp", every=1 if args.quick else 5)],
    )
    trainer.fit(model, loader)
    if trainer.is_global_zero:
        view = graddoctor.load(args.store, name="lightning-ddp")
        first, last = view.layers[0], view.layers[-1]
        print(f"{len(view.steps)} recorded steps on {args.devices} process(es); grad_norm at the last step: "
              f"{first} {view.stat('grad_norm', first)[-1]:.3g}, {last} {view.stat('grad_norm', last)[-1]:.3g}")
        print(f"next: graddoctor diagnose {args.store} --name lightning-ddp")


if __name__ == "__main__":
    main()
