"""Step-time overhead of graddoctor.watch: watched / unwatched, measured interleaved in one process.

    python benchmarks/overhead.py [--rounds 8] [--steps 20] [--quick] [--models mlp,cnn,gpt,lstm_lm]
        [--modes floor,default,full,full/10,cheap]
    python benchmarks/overhead.py --ddp [--rounds 8] [--steps 15] [--models mlp]
    python benchmarks/overhead.py --models lstm_lm --modes every=1,every=1/notime,every=10,every=10/notime
    python benchmarks/overhead.py --guard [--rounds 8] [--steps 15] [--models mlp,cnn] [--modes every=1,every=10]

For each model and mode it alternates blocks of unwatched (A) and watched (B) training steps
(A B, then B A, ...), takes the *mean* step time of each block (every step counted, recorded or
not) and the process CPU time per step, and prints the median over rounds of the ratio B/A with
its min-max, for wall and CPU time. "ops+max" / "ops+med" are the aten operators a watched step
adds to an unwatched one (counted with a TorchDispatchMode: forward, backward, hooks, optimizer),
for the costliest and the median of 10 consecutive watched steps. Modes:
  floor     one fused read of every gradient and every activation output per step (the least any
            monitor reading them must pay);
  default   watch(model, optimizer) as it comes;
  cheap     the cheap tier alone, every step;
  full      the full tier at every step (histograms off);
  full/10   everything at one step in 10 (every=10, full_every=10; histograms off);
  every=N[/notime][+option=V...]  watch(every=N, hist_every=0, option=V...): "/notime" watches
            without the per-time-step statistics of recurrent layers.
A watched block starts with untimed steps: its first recorded step and the run's first full-tier
steps (`full_first`), then waits for the writer to store them, so that the timed steps are the
steady state; `--steps` should be a multiple of 10 (whole
periods of the default's full tier).
`--ddp` runs the same comparison on 2 DDP ranks (gloo on CPU, one thread each, half the batch
each): both ranks alternate the same blocks and rank 0's step times are reported.
`--guard` prices guard="default" (its skip gate runs on every step): it alternates watched blocks
without (A) and with the guard (B) at the same `every`, and reports the ratio of block *means*
and the gate's memory beside the parameters' (the optimizer is SGD with momentum, as above: its
state is one buffer per parameter).
"""

from __future__ import annotations

import argparse
import os
import socket
import inspect
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import graddoctor


def mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    layers: list[nn.Module] = [nn.Linear(784, 512), nn.Tanh()]
    for _ in range(18):
        layers += [nn.Linear(512, 512), nn.Tanh()]
    layers += [nn.Linear(512, 10)]
    return nn.Sequential(*layers), torch.randn(256, 784), torch.randint(0, 10, (256,))


def cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    chans = [3, 32, 32, 64, 64, 64, 64]  # 0.14 M parameters in 20 tensors
    layers: list[nn.Module] = []
    for k, (cin, cout) in enumerate(zip(chans[:-1], chans[1:])):
        stride = 2 if k == 2 else 1  # 32x32 for two layers, then 16x16: ~30 MiB of ReLU outputs
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers), torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))


class CharLSTM(nn.Module):
    """A character LSTM language model: logits (N, vocab, T), a loss at every position."""

    def __init__(self, vocab: int = 96, hidden: int = 256) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 64)
        self.rnn = nn.LSTM(64, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(tokens))[0]).transpose(1, 2)


def lstm_lm() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """0.37 M parameters; batch 32 x 64 characters (random ids: the cost does not depend on the text)."""
    return CharLSTM(), torch.randint(0, 96, (32, 64)), torch.randint(0, 96, (32, 64))



class _Block(nn.Module):
    """A pre-LN GPT block whose attention calls F.scaled_dot_product_attention, as Hugging Face models do."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.heads = heads

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _Attention(nn.Module):
    def __init__(self, block: _Block) -> None:
        super().__init__()
        self.forward = block.attention  # type: ignore[method-assign]


class _GPT(nn.Module):
    def __init__(self, vocab: int = 64, width: int = 128, depth: int = 6, heads: int = 4, context: int = 64) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        for block in self.blocks:
            block.attn = _Attention(block)  # an attention site (class name ends in Attention) around the SDPA call
        self.ln_f, self.lm_head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x)).flatten(0, 1)  # [B*T, vocab] for cross_entropy


def gpt() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """GPT-style: 6 pre-LN blocks, width 128, 4 heads, context 64, batch 16, tied embeddings (1.2 M parameters)."""
    x = torch.randint(0, 64, (16, 64))
    return _GPT(), x, torch.randint(0, 64, (16 * 64,))


MODELS = {"mlp": mlp, "cnn": cnn, "gpt": gpt, "lstm_lm": lstm_lm}
OPS_STEPS = 10  # steps whose ops are counted: one full-tier period of the default


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


CPU_SECONDS: list[float] = []  # process CPU time of each block's timed steps (the DDP case reads it)


def block(model, opt, x, y, steps: int, run=None, agg=statistics.median, warmup: int = 1) -> float:
    """`agg` (median, or fmean for block means) of the wall time of `steps` training steps, after
    `warmup` untimed ones (one for A and B alike; a watched run's full-tier start is untimed too)."""
    for _ in range(warmup):
        loss = train_step(model, opt, x, y)
        if run is not None:
            run.log(loss=loss)
    if run is not None:
        run._writer.flush()  # the benchmark's peek: the run's start (store set-up, first rows) is written before timing
    times = []
    c0 = time.process_time()
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = train_step(model, opt, x, y)
        if run is not None:
            run.log(loss=loss)
        times.append(time.perf_counter() - t0)
    CPU_SECONDS.append((time.process_time() - c0) / steps)
    return agg(times)


class Floor:
    """One read of every activation output (forward hooks, sum) and every gradient (foreach norm)."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        self.vals: list[torch.Tensor] = []
        mods = [m for m in model.modules() if not list(m.children())]
        self.handles = [m.register_forward_hook(self.forward) for m in mods]
        self.handles.append(opt.register_step_pre_hook(self.pre))
        self.params = [p for p in model.parameters()]

    def forward(self, module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.is_floating_point():
            self.vals.append(output.detach().sum())

    def pre(self, *args) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        self.vals.extend(torch._foreach_norm(grads))
        torch.stack(self.vals).tolist()
        self.vals = []

    def close(self) -> None:
        for h in self.handles:
            h.remove()


_WATCH_KEYWORDS = set(inspect.signature(graddoctor.watch).parameters)
NAMED_MODES = {  # name -> watch options; a key this version of watch lacks is dropped (the "before" run)
    "default": {},
    "cheap": {"full_every": 10**6, "full_first": 0, "hist_every": 0},
    "full": {"every": 1, "full_every": 1, "hist_every": 0},
    "full/10": {"every": 10, "full_every": 10, "full_first": 0, "hist_every": 0},
}


def watch_options(mode: str) -> dict:
    """watch's keyword arguments for a mode: a named one, or "every=N[/notime]+option=V+..." (integers)."""
    if mode.split("/notime")[0] in NAMED_MODES:
        options = dict(NAMED_MODES[mode.split("/notime")[0]])
    else:
        first, *extra = mode.split("+")
        options = {"every": int(first.split("=")[1].split("/")[0]), "hist_every": 0}
        options.update({k: int(v) for k, v in (e.split("=") for e in extra)})
    if "pre_clip" in options:
        options["pre_clip"] = bool(options["pre_clip"])
    if mode == "cheap" and "full_every" not in _WATCH_KEYWORDS:
        return {"unsupported": True}
    return {k: v for k, v in options.items() if k in _WATCH_KEYWORDS}


def _start_steps(run) -> int:
    """Untimed steps at a watched run's start: its first recorded step (the store's set-up) and the
    full tier's first steps (full_first recorded steps)."""
    cfg = run.config
    return 1 + max(getattr(cfg, "full_first", 0), 1) * cfg.every


def watched_block(model, opt, x, y, steps: int, mode: str, store: Path, run_name: str, agg=statistics.median) -> float:
    if mode == "floor":
        floor = Floor(model, opt)
        try:
            return block(model, opt, x, y, steps, agg=agg)
        finally:
            floor.close()
    options = watch_options(mode)
    if mode.endswith("/notime"):  # without the per-time-step statistics of recurrent layers (docs/through-time.md)
        from graddoctor.probes import monitor

        saved, monitor.TimeProbe = monitor.TimeProbe, _NoTimeProbe
        try:
            with graddoctor.watch(model, opt, store=store, name=run_name, **options) as run:
                return block(model, opt, x, y, steps, run, agg=agg, warmup=_start_steps(run))
        finally:
            monitor.TimeProbe = saved
    with graddoctor.watch(model, opt, store=store, name=run_name, **options) as run:
        return block(model, opt, x, y, steps, run, agg=agg, warmup=_start_steps(run))


class _NoTimeProbe:
    """Stands in for probes.through_time.TimeProbe: no recurrent layer found, so no per-step hooks."""

    @staticmethod
    def for_plan(plan, recording):
        return None


def measure(name: str, mode: str, rounds: int, steps: int, store: Path) -> tuple[list[float], list[float], float]:
    """Per round: watched/unwatched ratio of block means of wall time, and of CPU time per step;
    and the unwatched step's median wall time (seconds)."""
    torch.manual_seed(0)
    model, x, y = MODELS[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        train_step(model, opt, x, y)  # warm-up
    wall, cpu, bases = [], [], []
    for r in range(rounds):
        times = {}
        for which in ("A", "B") if r % 2 == 0 else ("B", "A"):  # A B, then B A: no order bias
            if which == "A":
                t = block(model, opt, x, y, steps, agg=statistics.fmean)
            else:
                t = watched_block(model, opt, x, y, steps, mode, store, f"{name}-{mode}-{r}", agg=statistics.fmean)
            times[which] = (t, CPU_SECONDS[-1])
        wall.append(times["B"][0] / times["A"][0])
        cpu.append(times["B"][1] / times["A"][1])
        bases.append(times["A"][0])
    return wall, cpu, statistics.median(bases)


class OpCounter(TorchDispatchMode):
    """Counts the aten operators dispatched while it is active (forward, backward, hooks, optimizer)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _counted_step(model, opt, x, y, run=None) -> int:
    with OpCounter() as counter:
        loss = train_step(model, opt, x, y)
        if run is not None:
            run.log(loss=loss)
    return counter.n


def count_ops(name: str, mode: str, steps: int = 10) -> tuple[int, int, int]:
    """(aten ops of an unwatched step, of the costliest watched step, of the median watched step):
    over `steps` steps after the run's start, so a full-tier step is among them."""
    torch.manual_seed(0)
    model, x, y = MODELS[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_step(model, opt, x, y)
    base = _counted_step(model, opt, x, y)
    if mode == "floor":
        floor = Floor(model, opt)
        try:
            n = _counted_step(model, opt, x, y)
        finally:
            floor.close()
        return base, n, n
    with tempfile.TemporaryDirectory() as tmp:
        with graddoctor.watch(model, opt, store=Path(tmp) / "ops.db", **watch_options(mode)) as run:
            for _ in range(_start_steps(run)):
                train_step(model, opt, x, y)
            counts = [_counted_step(model, opt, x, y, run) for _ in range(steps)]
    return base, max(counts), int(statistics.median(counts))


def memory(width: int = 2900, depth: int = 12, steps: int = 12, update_ratio: str = "sample") -> dict[str, float]:
    """Bytes watch(model, optimizer, update_ratio=...) holds beyond training, on a ~100M-parameter
    MLP (MiB): the update-ratio buffers (the sample, or the full copy with "exact") during a
    full-tier step (seen from an optimizer post-hook that runs before watch's, where they are at
    their largest), and everything it holds between steps (those buffers, work buffers), at their
    maximum over the run."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Tanh()]
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(8, width)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    seen = {"during": 0, "between": 0}

    def held(run) -> int:
        kept = run._param_side.held()  # the benchmark's peek at watch's buffers
        scratch = run._scratch._buffers.values()
        return sum(t.numel() * t.element_size() for t in (*kept, *scratch))

    with tempfile.TemporaryDirectory() as tmp:
        box = {}
        hook = opt.register_step_post_hook(lambda *a: seen.__setitem__("during", max(seen["during"], held(box["run"]))))
        with graddoctor.watch(model, opt, store=Path(tmp) / "m.db", update_ratio=update_ratio) as run:
            box["run"] = run
            for _ in range(steps):
                loss = model(x).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                seen["between"] = max(seen["between"], held(run))
        hook.remove()
    mib = 2**20
    return {"parameters": params / mib, "during a full-tier step": seen["during"] / mib,
            "between steps": seen["between"] / mib, "n_params": sum(p.numel() for p in model.parameters())}


def guard_block(model, opt, x, y, steps: int, every: int, store: Path, run_name: str, guard) -> tuple[float, float]:
    """Mean step time of a watched block with or without `guard`, and the skip gate's memory (MiB)."""
    with graddoctor.watch(model, opt, store=store, name=run_name, every=every, hist_every=0, guard=guard) as run:
        seconds = block(model, opt, x, y, steps, run, agg=statistics.fmean)
        gate = run._guard.gate if run._guard is not None else None  # the benchmark's peek at the gate
        mib = sum(t.numel() * t.element_size() for t in gate._snapshot.values()) / 2**20 if gate else 0.0
    return seconds, mib


def guard_measure(name: str, every: int, rounds: int, steps: int, store: Path) -> tuple[list[float], float, float]:
    torch.manual_seed(0)
    model, x, y = MODELS[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        train_step(model, opt, x, y)  # warm-up (and the momentum buffers exist)
    ratios, mib = [], 0.0
    for r in range(rounds):
        order = (None, "default") if r % 2 == 0 else ("default", None)
        times = {}
        for guard in order:
            times[guard], used = guard_block(model, opt, x, y, steps, every, store, f"{name}-guard-{r}-{guard}", guard)
            mib = max(mib, used)
        ratios.append(times["default"] / times[None])
    param_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    return ratios, mib, param_mib


def ddp_worker(rank: int, world: int, port: int, models: list[str], modes: list[str], rounds: int, steps: int, store: str) -> None:
    """One rank of the DDP case: the same interleaved blocks on every rank; rank 0 prints."""
    from graddoctor.probes.distributed import Reducer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    exchange = _timed(Reducer, "reduce")  # pack, all_gather, combine: what DDP adds to a recorded step
    try:
        for name in models:
            for mode in modes:
                wall, cpu = ddp_measure(name, mode, rank, world, rounds, steps, Path(store), exchange)
                if rank == 0:
                    print(f"{name + ' ddp':9} {mode:9} {statistics.median(wall):8.3f} {min(wall):7.3f} {max(wall):7.3f}"
                          f"   cpu {statistics.median(cpu):.3f} ({min(cpu):.3f}-{max(cpu):.3f}); exchange "
                          f"{statistics.median(exchange) * 1e3:.2f} ms per recorded step", flush=True)
        torch.distributed.barrier()  # neither rank tears gloo down while the other still talks
    finally:
        torch.distributed.destroy_process_group()


def ddp_measure(name, mode, rank, world, rounds, steps, store, exchange) -> tuple[list[float], list[float]]:
    """Ratios watched/unwatched of rank 0's median step wall time and of its process CPU time per step
    (the CPU time ignores the other processes sharing the cores, and time spent waiting in gloo)."""
    torch.manual_seed(0)
    model, x, y = MODELS[name]()
    x, y = x.chunk(world)[rank], y.chunk(world)[rank]
    model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        train_step(model, opt, x, y)
    wall, cpu = [], []
    exchange.clear()
    for r in range(rounds):
        times = {}
        for which in ("A", "B") if r % 2 == 0 else ("B", "A"):
            if which == "A":
                t = block(model, opt, x, y, steps)
            else:
                t = watched_block(model, opt, x, y, steps, mode, store, f"ddp-{name}-{mode}-{r}")
            times[which] = (t, CPU_SECONDS[-1])
        wall.append(times["B"][0] / times["A"][0])
        cpu.append(times["B"][1] / times["A"][1])
    return wall, cpu


def _timed(cls: type, method: str) -> list[float]:
    """Replace cls.method (in this process only) by a wrapper that appends each call's seconds."""
    spent: list[float] = []
    fn = getattr(cls, method)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)

    setattr(cls, method, wrapper)
    return spent


def ddp(models: list[str], modes: list[str], rounds: int, steps: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        args = (2, port, models, modes, rounds, steps, str(Path(tmp) / "bench.db"))
        torch.multiprocessing.spawn(ddp_worker, args=args, nprocs=2)


def breakdown(name: str, steps: int = 30, mode: str = "full") -> dict[str, float]:
    """Milliseconds per step spent in each hook of a watched run (`mode`), timed from outside."""
    from graddoctor.probes.activations import ActivationProbes
    from graddoctor.probes.clock import StepClock

    spent: dict[str, float] = {}
    owners = {"_on_forward": ActivationProbes, "_on_out_grad": ActivationProbes,
              "_on_pre_step": StepClock, "_on_post_step": StepClock}  # the Run's parts that own each hook
    originals = {n: getattr(cls, n) for n, cls in owners.items()}

    def timed(n, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[n] = spent.get(n, 0.0) + time.perf_counter() - t0
        return wrapper

    torch.manual_seed(0)
    model, x, y = MODELS[name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    base = block(model, opt, x, y, steps)
    try:
        for n, fn in originals.items():
            setattr(owners[n], n, timed(n, fn))
        options = {"hist_every": 0, **watch_options(mode)}
        with tempfile.TemporaryDirectory() as tmp, graddoctor.watch(model, opt, store=Path(tmp) / "b.db", **options) as run:
            block(model, opt, x, y, 2, run, warmup=_start_steps(run))
            spent.clear()
            t0 = time.perf_counter()
            for _ in range(steps):
                train_step(model, opt, x, y)
            watched = (time.perf_counter() - t0) / steps
    finally:
        for n, fn in originals.items():
            setattr(owners[n], n, fn)
    out = {"unwatched step": base * 1e3, "watched step": watched * 1e3}
    out.update({n.strip("_").replace("on_", "") + " hooks": v / steps * 1e3 for n, v in spent.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per block (a multiple of 10: whole full-tier periods)")
    ap.add_argument("--models", default="mlp,cnn,gpt,lstm_lm")
    ap.add_argument("--modes", default="floor,default,full,full/10")
    ap.add_argument("--memory", action="store_true", help="bytes watch holds on a ~100M-parameter MLP")
    ap.add_argument("--ops-only", action="store_true", help="only count the aten ops per watched step (no timing)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 4 steps: checks that it runs")
    ap.add_argument("--breakdown", action="store_true", help="time each hook of a watched step (ms), every=1")
    ap.add_argument("--ddp", action="store_true", help="2 DDP ranks on gloo (CPU), watched vs unwatched")
    ap.add_argument("--guard", action="store_true", help='watch(guard="default") vs watch alone, block means')
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory:
        for mode in ("sample", "exact"):
            out = memory(update_ratio=mode)
            label = "default (update_ratio='sample')" if mode == "sample" else "update_ratio='exact'"
            print(f"{out['n_params'] / 1e6:.0f} M parameters ({out['parameters']:.0f} MiB), {label}: watch holds "
                  f"{out['during a full-tier step']:.1f} MiB at the peak of a full-tier step "
                  f"({out['during a full-tier step'] / out['parameters']:.2%} of the parameter bytes), at most "
                  f"{out['between steps']:.2f} MiB between steps ({out['between steps'] / out['parameters']:.2%})",
                  flush=True)
        return 0
    if args.breakdown:
        for name in args.models.split(","):
            for mode in [m for m in args.modes.split(",") if m != "floor"]:
                print(f"{name} {mode}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in breakdown(name, mode=mode).items()))
        return 0
    if args.quick:
        args.rounds, args.steps = 2, 10
    if args.guard:
        return guard_main(args)
    if args.ddp:
        modes = [m for m in args.modes.split(",") if m != "floor"]
        print(f"torch {torch.__version__}, 2 DDP ranks (gloo, 1 thread each); rounds={args.rounds}, steps/block={args.steps}")
        print(f"{'model':9} {'mode':9} {'median':>8} {'min':>7} {'max':>7}", flush=True)
        ddp(args.models.split(","), modes, args.rounds, args.steps)
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; rounds={args.rounds}, steps/block={args.steps}; "
          f"ratios of block means (every step counted), median (min-max) over rounds; ops: aten ops added "
          f"to a watched step (costliest / median step of {OPS_STEPS})")
    print(f"{'model':7} {'mode':9} {'wall':>6} {'min':>6} {'max':>6}   {'cpu':>6} {'min':>6} {'max':>6}   "
          f"{'ops+max':>7} {'ops+med':>7}  step")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for mode in args.modes.split(","):
                if mode != "floor" and watch_options(mode).get("unsupported"):
                    print(f"{name:7} {mode:9} (not in this version of watch)", flush=True)
                    continue
                plain, most, typical = count_ops(name, mode, OPS_STEPS)
                if args.ops_only:
                    print(f"{name:7} {mode:9} {'':>6} {'':>6} {'':>6}   {'':>6} {'':>6} {'':>6}   {most - plain:7d} "
                          f"{typical - plain:7d}  {plain} ops", flush=True)
                    continue
                wall, cpu, base = measure(name, mode, args.rounds, args.steps, Path(tmp) / "bench.db")
                print(f"{name:7} {mode:9} {statistics.median(wall):6.3f} {min(wall):6.3f} {max(wall):6.3f}   "
                      f"{statistics.median(cpu):6.3f} {min(cpu):6.3f} {max(cpu):6.3f}   {most - plain:7d} "
                      f"{typical - plain:7d}  {base * 1e3:.1f} ms, {plain} ops", flush=True)
    return 0


def guard_main(args: argparse.Namespace) -> int:
    modes = [m for m in args.modes.split(",") if m.startswith("every=")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; rounds={args.rounds}, steps/block={args.steps}; "
          f"guard='default' / no guard, block means, SGD momentum")
    print(f"{'model':6} {'mode':9} {'median':>8} {'min':>7} {'max':>7} {'gate MiB':>9} {'params MiB':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for mode in modes:
                ratios, mib, param_mib = guard_measure(name, int(mode.split("=")[1]), args.rounds, args.steps,
                                                       Path(tmp) / "guard.db")
                print(f"{name:6} {mode:9} {statistics.median(ratios):8.3f} {min(ratios):7.3f} {max(ratios):7.3f} "
                      f"{mib:9.1f} {param_mib:10.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
