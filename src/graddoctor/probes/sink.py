"""The sink: where a closed step's device partials go. One transfer to the host, then the writer.

`close_step` moves the step record's tensors (with the per-time-step partials, the logged tensors
and the guard's verdicts) to the host in one copy, recounts NaN/Inf gradients exactly and redoes
overflowed float32 squares in float64 (a second transfer, on such steps only), hands the payload to
the guard and, under torch.distributed, to the reduction over ranks (probes/distributed.py); the
rest happens in the store writer's thread (probes/rows.py). It also keeps the scalars a `run.log`
gave after their step closed, until they are written.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from . import stats
from .guarded import observe_step, observe_tail
from .record import GN, WN, WSQ, StepRecord, transfer
from .rows import StepPayload
from .select import LayerPlan


class StepSink:
    """One Run's path from a closed `StepRecord` to its store writer."""

    def __init__(self, plan: list[LayerPlan], writer: Any, *, optimizer: Any, reducer: Any, local: Any,
                 guard: Any, time_probe: Any) -> None:
        self._plan, self._writer, self._optimizer = plan, writer, optimizer
        self._reducer, self._local, self._guard, self._time = reducer, local, guard, time_probe
        self.late_logs: list[tuple[int, str, float | torch.Tensor]] = []  # logged after their step closed

    def close_step(self, rec: StepRecord, no_forward: bool) -> None:
        """End a recorded step: one transfer to the host; the rest happens in the writer's thread."""
        scalars = self.late_logs + [(rec.step, k, v) for k, v in rec.logged.items()]
        self.late_logs = []
        if self._optimizer is not None:  # read now: a scheduler changes it before the next flush
            scalars += [(rec.step, f"lr/group{g}", group["lr"]) for g, group in enumerate(self._optimizer.param_groups)]
        n = len(rec.values)
        time_keys, time_values = self._time.device_values() if self._time is not None else ([], [])
        guarded = self._guard.pending() if self._guard is not None else []  # the gate's verdicts ride along
        logged = [v for _, _, v in scalars if isinstance(v, torch.Tensor)]
        host = transfer(rec.values + time_values + logged + guarded)
        if guarded:
            host, guarded = host[:len(host) - len(guarded)], host[len(host) - len(guarded):]
        n_time = n + len(time_values)
        payload = StepPayload(
            step=rec.step,
            wall_time=time.time(),
            keys=rec.keys,
            values=host[:n],
            numel=dict(rec.numel),
            fired=rec.fired,
            scalars=scalar_rows(scalars, host[n_time:]),
            nonfinite=self._nonfinite_counts(rec.keys, host),
            time=(time_keys, host[n:n_time]),
            calls=rec.calls,
        )
        if any(not math.isfinite(v) for (_, code), v in zip(rec.keys, host) if code in (GN, WN, WSQ)):
            payload.exact_grad_sq, payload.exact_weight_sq = self._exact_squares(rec.keys, host)
        if self._guard is not None:
            actions = observe_step(self._guard, self._plan, payload, guarded)
            if actions:
                self._writer.put(guard_actions=actions)
        if self._reducer is not None:  # one all_gather; rank 0's writer thread combines the ranks' partials
            payload.combine = self._reducer.reduce(payload, hist=rec.hist, no_forward=no_forward)
            if payload.combine is None:
                return
        self._writer.put_record(payload)

    def begin(self, step: int) -> None:
        """Step `step` is in progress: the writer stores it as the steps taken (a resume continues there)."""
        self._writer.next_step = step

    def flush(self, *, late_logs: bool = True) -> None:
        """Write everything handed over so far (run.view(); a guard's stop, without the late scalars)."""
        if late_logs and self.late_logs:
            self.flush_late_logs()
        self._writer.flush()

    def flush_late_logs(self) -> None:
        late, self.late_logs = self.late_logs, []
        self._writer.put(scalars=scalar_rows(late, transfer([v for _, _, v in late if isinstance(v, torch.Tensor)])))

    def finish(self, step: int) -> None:
        """What is left when the run closes: late scalars, the guard's last verdicts."""
        if self.late_logs:
            self.flush_late_logs()
        if self._guard is not None:
            self._writer.put(guard_actions=observe_tail(self._guard, step))

    def _nonfinite_counts(self, keys: list, host: list[np.ndarray]) -> dict[int, float]:
        """Exact NaN/Inf gradient counts, only for layers whose gradient norm is not finite.

        Costs a second transfer, on such steps only: a finite norm means every element is finite.
        """
        bad = sorted({i for (i, code), v in zip(keys, host) if code == GN and not math.isfinite(v)})
        if not bad:
            return {}
        local = self._local if self._local is not None else list
        counts = [stats.nonfinite_count(local([p.grad for p in self._plan[i].params if p.grad is not None])) for i in bad]
        found = [(i, c) for i, c in zip(bad, counts) if c is not None]
        return {i: float(v) for (i, _), v in zip(found, transfer([c for _, c in found]))}

    def _exact_squares(self, keys: list, host: list[np.ndarray]) -> tuple[dict[int, float], dict[int, float]]:
        """Gradient and weight sums of squares in float64 for layers whose float32 norm was not finite:
        finite here means the values were finite and float32 overflowed (no false non-finite). Bad steps
        only, one more transfer. The weights are read after the update (non-finite before means
        non-finite after for every torch optimizer)."""
        local = self._local if self._local is not None else list
        found: list[tuple[str, int, torch.Tensor]] = []
        for which, codes in (("grad", (GN,)), ("weight", (WN, WSQ))):
            bad = sorted({i for (i, code), v in zip(keys, host) if code in codes and not math.isfinite(v)})
            for i in bad:
                params = self._plan[i].params
                tensors = local([p.grad for p in params if p.grad is not None] if which == "grad" else list(params))
                found.append((which, i, sum((torch.linalg.vector_norm(t.detach(), dtype=torch.float64) ** 2
                                             for t in tensors), torch.zeros((), dtype=torch.float64))))
        values = transfer([v for _, _, v in found]) if found else []
        out: tuple[dict[int, float], dict[int, float]] = ({}, {})
        for (which, i, _), v in zip(found, values):
            out[0 if which == "grad" else 1][i] = float(v)
        return out


def scalar_rows(scalars: list, host_tail: list[np.ndarray]) -> list[tuple[int, str, float]]:
    it = iter(host_tail)
    return [(s, k, float(next(it)) if isinstance(v, torch.Tensor) else float(v)) for s, k, v in scalars]
