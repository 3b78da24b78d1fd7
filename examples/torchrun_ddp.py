"""Watch a DDP training run on several processes: every rank calls graddoctor.watch, rank 0 writes.

    torchrun --nproc-per-node 2 examples/torchrun_ddp.py [--quick] [--store ddp_runs.db] [--fsdp]

A 12-layer ReLU MLP trained on synthetic data, each rank on its share of every batch. The statistics in the store are those of the whole batch: gradient norms of
the averaged gradient, activation moments over every rank's samples, a unit dead only if it is
silent on every rank (docs/distributed.md, "torch.distributed: DDP and FSDP2"). `--fsdp` shards the model
with FSDP2 (`fully_shard`) instead. On CPU the processes talk over gloo; on GPUs over NCCL, one
GPU per process, with graddoctor's own exchange on a gloo group.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn

import graddoctor

DEPTH, WIDTH, INPUTS, CLASSES, BATCH = 12, 128, 32, 10, 128


def build() -> nn.Sequential:
    torch.manual_seed(0)  # the same initial weights on every rank (DDP would broadcast them anyway)
    layers: list[nn.Module] = []
    width_in = INPUTS
    for _ in range(DEPTH - 1):
        layers += [nn.Linear(width_in, WIDTH), nn.ReLU()]
        width_in = WIDTH
    return nn.Sequential(*layers, nn.Linear(width_in, CLASSES))


def batches(steps: int, rank: int, world: int, device: torch.device):
    """Each step's global batch, split by rank: rank r trains on rows r, r + world, ..."""
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(INPUTS, CLASSES, generator=gen)
    for _ in range(steps):
        x = torch.randn(BATCH, INPUTS, generator=gen)
        y = (x @ teacher).argmax(dim=1)
        yield x[rank::world].to(device), y[rank::world].to(device)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few steps: checks that it runs")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--store", default="ddp_runs.db")
    ap.add_argument("--fsdp", action="store_true", help="shard with FSDP2 fully_shard instead of DDP")
    args = ap.parse_args(argv)
    steps, every = (6, 2) if args.quick else (args.steps, args.every)

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    model = build().to(device)
    if args.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        model = fully_shard(model)
    else:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    # Every rank calls watch with the same arguments; only rank 0 opens the store.
    with graddoctor.watch(model, opt, store=args.store, name="ddp" if not args.fsdp else "fsdp2", every=every) as run:
        for x, y in batches(steps, rank, world, device):
            loss = nn.functional.cross_entropy(model(x), y)  # mean over this rank's samples
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run.log(loss=loss)  # the store keeps rank 0's value

    if rank == 0:
        r = graddoctor.load(args.store, name=run.name)
        first, last = r.stat("grad_norm", "0")[[0, -1]]
        print(f"{run.name}: {world} ranks, {len(r.steps)} recorded steps of {steps} in {args.store}; "
              f"grad_norm of layer '0' {first:.3g} -> {last:.3g}, dead_frac of layer '1' {r.stat('dead_frac', '1')[-1]:.3f}")
        print(f"next: graddoctor diagnose {args.store}")
    dist.barrier()  # rank 1 waits for rank 0's summary before the group goes
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
