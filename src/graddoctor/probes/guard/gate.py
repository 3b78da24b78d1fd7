"""The skip gate: the optimizer's update is undone on the device, without a host sync, when the
step's gradients are not finite or their norm is above the spike limit.

Before `optimizer.step()` the gate computes the whole-model gradient norm and a 0-d boolean `ok`
on the device, and copies every parameter that has a gradient and every tensor of its optimizer
state into reused buffers. After the step each of them is set to `where(ok, new, old)`: the
update is kept or dropped element by element on the device, bit for bit, and nothing waits for
the verdict. State the step created (the first step of Adam, of SGD with momentum) is set to
zeros where the step is dropped, which is exactly the state those optimizers start from.

Memory: one copy of the parameters that have gradients plus one copy of their optimizer state
(SGD: none; SGD with momentum: 1x the parameters; Adam/AdamW: 2x and the step counters), kept
for the whole run and freed when it closes. Time: two passes over parameters and state per step.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...errors import ConfigError, ProbeError
from .. import stats

SUPPORTED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def check_skippable(optimizer: Any) -> None:
    """Refuse, before training, an optimizer whose step the gate cannot undo exactly."""
    if optimizer is None:
        raise ConfigError("a guard that skips steps needs the optimizer: watch(model, optimizer, guard=...).")
    if not isinstance(optimizer, SUPPORTED):
        raise ConfigError(
            f"guard 'skip' supports {', '.join(c.__name__ for c in SUPPORTED)} (foreach, fused or not); got "
            f"{type(optimizer).__name__}, whose state the gate cannot prove it restores exactly. Use the actions "
            f"'warn' or 'stop' with this optimizer (guard=Guard(rules=(GuardRule(NonFinite(), 'stop'),)))."
        )
    for group in optimizer.param_groups:
        if isinstance(optimizer, torch.optim.SGD) and group.get("momentum", 0) and group.get("dampening", 0):
            raise ConfigError(
                f"guard 'skip' with SGD(momentum={group['momentum']}, dampening={group['dampening']}): a skipped first "
                f"step would leave a zero momentum buffer, which differs from SGD's first-step buffer when dampening "
                f"is not 0. Use dampening=0, or the actions 'warn'/'stop'."
            )
        if group.get("differentiable", False):
            raise ConfigError("guard 'skip' does not support differentiable=True optimizers (the restore is not differentiable).")


class SkipGate:
    """Decides on the device whether each step's update stands, and undoes it where it does not."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, check_finite: bool, check_spike: bool) -> None:
        check_skippable(optimizer)
        self.optimizer = optimizer
        self.check_finite, self.check_spike = check_finite, check_spike
        self._snapshot: dict[tuple[int, str], torch.Tensor] = {}  # (id(param), state key or '') -> copy
        self._limit: torch.Tensor | None = None
        self._limit_value = math.inf
        self._ok: torch.Tensor | None = None
        self._held: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (live tensor, its copy; None: new state)
        self._params: list[torch.Tensor] = []
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor, float]] = []  # (step, total norm, ok, limit)

    def set_limit(self, value: float) -> None:
        """The gradient norm above which later steps are dropped (host number; written without a sync)."""
        self._limit_value = value
        if self._limit is not None:
            self._limit.fill_(value)  # a kernel with a scalar argument: no device-to-host wait

    def before_update(self, step: int) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        device = grads[0].device
        total = torch.linalg.vector_norm(torch.stack([n.to(device, torch.float32) for n in stats.norms(grads)]))
        if self._limit is None:
            self._limit = torch.full((), self._limit_value, device=device, dtype=torch.float32)
        ok = torch.ones((), dtype=torch.bool, device=device)
        if self.check_finite:
            ok = ok & torch.isfinite(total)
        if self.check_spike:
            ok = ok & ~(total > self._limit)  # NaN > limit is False: a NaN is the finite check's call
        self._ok, self._params = ok, params
        self._held = self._hold(params, device)
        self.pending.append((step, total, ok, self._limit_value))

    def after_update(self) -> None:
        if self._ok is None:
            return
        ok, self._ok = self._ok, None
        known = {id(t) for t, _ in self._held}
        for tensor, copy in self._held:
            torch.where(ok, tensor, copy, out=tensor)
        for p in self._params:  # state this step created: zeros where the step is dropped
            for key, value in self.optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and id(value) not in known:
                    torch.where(ok, value, torch.zeros((), dtype=value.dtype, device=value.device), out=value)
        self._held, self._params = [], []

    def release(self) -> None:
        self._snapshot, self._held, self._params, self._ok = {}, [], [], None

    def _hold(self, params: list[torch.Tensor], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        live = []
        for p in params:
            live.append(((id(p), ""), p.detach()))
            for key, value in self.optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor):
                    live.append(((id(p), key), value))
                elif value is not None:
                    raise ProbeError(
                        f"guard 'skip': the optimizer state {key!r} of a parameter is a {type(value).__name__}, not a "
                        f"tensor, so a dropped step cannot be undone on the device. Use the actions 'warn'/'stop'."
                    )
        for _, t in live:
            if t.device != device:
                raise ProbeError(
                    f"guard 'skip': a parameter or optimizer state tensor is on {t.device} while the gradients are on "
                    f"{device}; undoing a step there would need a host sync. With Adam/AdamW on a GPU pass "
                    f"capturable=True or fused=True (their step counters then live on the GPU)."
                )
        copies = [self._snapshot_of(key, t) for key, t in live]
        torch._foreach_copy_(copies, [t for _, t in live])
        return [(t, c) for (_, t), c in zip(live, copies)]

    def _snapshot_of(self, key: tuple[int, str], like: torch.Tensor) -> torch.Tensor:
        buf = self._snapshot.get(key)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = torch.empty_like(like, memory_format=torch.preserve_format)
            self._snapshot[key] = buf  # allocated once, reused every step
        return buf
