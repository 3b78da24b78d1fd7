"""The parameter side of a recorded step: gradients and weights before the update, the update after it.

Read in the optimizer's step hooks (or when `run.read_gradients()` says): gradient norms after any
clipping and unscaling the loop does before `step`, the weights before the update and the update
after it, on full-tier steps only. `snapshot="sample"` (the default) copies a fixed sample of each
parameter (about max(n/67, 4096) of its n elements, `stats.sample_plan`) before the update and
estimates ‖w_after − w_before‖² from it (update_ratio_est: memory ~1.6 % of the parameter bytes on
a 101 M-parameter MLP); `snapshot="exact"` copies every parameter
(update_ratio: memory one copy of the parameters during the step). Either is released after the
step. Under FSDP2 `local` maps parameters and gradients to this rank's shards.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import ConfigError
from . import stats
from .record import GN, HIST_GRAD, UE, USQ, WN, WSQ, StepRecord

UPDATE_MODES = ("sample", "exact")


class ParamReader:
    """Reads the watched parameters of each recorded step into its `StepRecord`."""

    def __init__(
        self,
        params: list[torch.Tensor],
        owner: list[int],
        *,
        snapshot: str | bool,
        scratch: stats.Scratch,
        local: Callable[[list[Any]], list[Any]] | None = None,
    ) -> None:
        self.params, self.owner = params, owner  # owner[i]: the layer index of params[i]
        # "exact": a full copy (update_ratio); "sample" (or True): a sample (update_ratio_est); False: neither
        self._mode = "sample" if snapshot is True else snapshot or None
        if self._mode not in (None, *UPDATE_MODES):
            raise ConfigError(f"update_ratio={snapshot!r}: expected one of {UPDATE_MODES} or False")
        self._use_snapshot = self._mode == "exact"
        self._sample: list[torch.Tensor] | None = None  # sampled w before the update, on full-tier steps only
        self._plan: tuple[tuple, list[tuple[int, int]], list[float]] | None = None  # (shapes, plan, scales)
        self._scratch = scratch
        self._local = local
        self._snapshot: list[torch.Tensor] | None = None  # w before the update, on full-tier steps only
        self._zeros: torch.Tensor | None = None

    def before_update(self, rec: StepRecord) -> None:
        """Gradient norms; on full-tier steps also weight norms (and the snapshot), and gradient
        histograms on histogram steps."""
        params, grads = self.params, [p.grad for p in self.params]
        if self._local is not None:  # FSDP2: this rank's shards; rank 0 sums their squares over ranks
            params, grads = self._local(params), self._local(grads)
        present = [(i, g) for i, g in enumerate(grads) if g is not None]
        for (i, _), norm in zip(present, stats.norms([g for _, g in present])):
            rec.add(self.owner[i], GN, norm)
        if not rec.full:  # the cheap tier: a layer with no gradient at all has a zero one, as on full steps
            for layer in sorted({self.owner[i] for i, g in enumerate(grads) if g is None}
                                - {self.owner[i] for i, _ in present}):
                rec.add(layer, GN, self._zero(params[0]))
            return
        if self._use_snapshot:
            for i, squares in enumerate(stats.snapshot_sumsq(self._snapshot_buffers(params), params)):
                rec.add(self.owner[i], WSQ, squares)
        else:
            for i, norm in enumerate(stats.norms([p.detach() for p in params])):
                rec.add(self.owner[i], WN, norm)
            if self._mode == "sample":
                self._sample = stats.sample_snapshot(params, self._sample_plan(params)[1])
        if rec.hist:
            for li, layer_grads in self._grads_by_layer(grads):
                rec.add(li, HIST_GRAD, stats.histogram(torch.cat([g.detach().reshape(-1) for g in layer_grads])))

    def after_update(self, rec: StepRecord) -> None:
        """‖w_after − w_before‖² of each parameter (or its estimate), when the snapshot (or the
        sample) was taken this step."""
        if self._sample is not None:
            params = self.params if self._local is None else self._local(self.params)
            _, plan, scales = self._sample_plan(params)
            for i, squares in enumerate(stats.sample_update_sumsq(self._sample, params, plan, scales)):
                rec.add(self.owner[i], UE, squares)
            self._sample = None  # released: nothing of a parameter's size outlives the step
        if self._snapshot is None:
            return
        params = self.params if self._local is None else self._local(self.params)
        for i, squares in enumerate(stats.update_sumsq(self._snapshot, params, self._scratch)):
            rec.add(self.owner[i], USQ, squares)
        self._snapshot = None  # released: update_ratio costs no memory between full-tier steps

    def discard(self, rec: StepRecord) -> None:
        """Forget what `before_update` put in `rec` (read too early: the caller reads it again)."""
        kept = [(key, v) for key, v in zip(rec.keys, rec.values) if key[1] not in (GN, WN, WSQ, HIST_GRAD)]
        rec.keys, rec.values = [key for key, _ in kept], [v for _, v in kept]

    def _zero(self, like: torch.Tensor) -> torch.Tensor:
        if self._zeros is None or self._zeros.device != like.device:
            self._zeros = torch.zeros((), device=like.device)
        return self._zeros

    def release(self) -> None:
        """Free the snapshot (the memory cost of update_ratio) and the work buffers when the run closes."""
        self._snapshot = self._sample = None
        self._scratch = stats.Scratch()

    def held(self) -> list[torch.Tensor]:
        """The buffers this reader holds now (the snapshot or the sample): what benchmarks/overhead.py
        --memory counts."""
        return [*(self._snapshot or ()), *(self._sample or ())]

    def _sample_plan(self, params: list[torch.Tensor]) -> tuple[tuple, list[tuple[int, int]], list[float]]:
        """Which elements `update="sample"` copies: fixed for the run (rebuilt only if the shapes change)."""
        shapes = tuple(p.shape for p in params)
        if self._plan is None or self._plan[0] != shapes:
            plan = stats.sample_plan(shapes)
            self._plan = (shapes, plan, stats.sample_scales(shapes, plan))
        return self._plan

    def _snapshot_buffers(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._snapshot is None:  # allocated at each full-tier step, released after its update
            self._snapshot = stats.flat_snapshot(params)
        return self._snapshot

    def _grads_by_layer(self, grads: list[torch.Tensor | None]) -> list[tuple[int, list[torch.Tensor]]]:
        by_layer: dict[int, list[torch.Tensor]] = {}
        for owner, g in zip(self.owner, grads):
            if g is not None:
                by_layer.setdefault(owner, []).append(g)
        return sorted(by_layer.items())
