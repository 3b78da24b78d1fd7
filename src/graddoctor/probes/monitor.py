"""Run: the object `graddoctor.watch` returns. Ties the plan, the hooks, the step records and the store.

Timing of every reading (docs/statistics.md): activation statistics in forward hooks, dL/d output in
tensor hooks during backward, parameter gradients and weights in the optimizer's step pre-hook
(after any clipping or GradScaler unscaling the loop does before `step`), updates in its post-hook.
"""

from __future__ import annotations

import atexit
import functools
import math
import time
import warnings
import weakref
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import RunStatus, WatchConfig
from ..errors import ConfigError, ProbeError
from ..store.sqlite import RunStore
from ..store.view import RunView
from . import stats
from .guard.events import GuardStop
from .guard.runtime import start_guard
from .guarded import guard_step, observe_step, observe_tail
from .hooks import AttributePatch, HandleGroup
from .params import ParamReader
from .intercept import AttentionMode, read_mha, stats_sink
from .record import GN, GPRE, WN, WSQ, HIST_ACT, LMAX, LROWS, LSE, NZ, OG, OGS, S, SAT, SD, SS, UNIT, StepRecord, transfer
from .rows import StepPayload
from .schedule import FullSchedule
from .attention import logit_stats
from .select import first_float_tensor, layout_modules, plan_layers
from .session import open_session
from .setup import check_inputs, unwrap
from .through_time import TimeProbe

_ACCUMULATE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}  # half precision sums in float32

NO_FORWARD = (
    "saw gradients but no forward pass of the watched model: it probably ran through a torch.compile'd "
    "wrapper that was called before watch() attached its hooks, and PyTorch ignores hooks added after "
    "compilation. Call watch() before the first call of the compiled model, or torch._dynamo.reset() before watch()."
)


class Run:
    """A watched training run: a context manager that records into a run store.

    Use it through `graddoctor.watch`. Inside the `with` block, `run.log(**scalars)` adds scalars
    to the current step and, without an optimizer, `run.step()` marks the end of each step.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        store: str | RunStore,
        name: str | None,
        config: WatchConfig,
        scaler: Any = None,
        user_config: dict[str, Any] | None = None,
        resume: bool = False,
        reducer: Any = None,
        guard: Any = None,
        mirror: Any = None,
    ) -> None:
        if config.budget is not None and reducer is not None:
            raise ConfigError("watch(budget=...) times each rank's own steps, so ranks could choose different "
                              "full-tier steps; under torch.distributed give full_every= instead.")
        self.model = unwrap(model)
        self.optimizer = optimizer
        self.config = config
        self.scaler = scaler
        self._plan = plan_layers(self.model, config.include, config.exclude)
        check_inputs(self.model, self._plan, optimizer, config)
        self._guard = start_guard(guard, optimizer, distributed=reducer is not None)  # None: guards off
        self._params = [p for layer in self._plan for p in layer.params]
        self._owner = [i for i, layer in enumerate(self._plan) for _ in layer.params]
        name = name or f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        self._session = open_session(
            self.model, self._plan, optimizer, config, store, name, user_config=user_config, resume=resume, reducer=reducer,
            mirror=mirror,
        )
        self.run_id, self.name, self._start_step = self._session.run_id, self._session.name, self._session.start_step
        self._writer = self._session.writer
        # Several processes (probes/distributed.py): decided once here, never per hook call.
        self._reducer = reducer
        self._local: Any = reducer.local_of if reducer is not None and reducer.any_sharded else None
        self._handles = HandleGroup()
        self._scratch = stats.Scratch()
        self._param_side = ParamReader(self._params, self._owner, snapshot=config.update_ratio if optimizer is not None else False,
                                       scratch=self._scratch, local=self._local)
        self._record: StepRecord | None = None
        self._late_logs: list[tuple[int, str, float | torch.Tensor]] = []
        self._forward_seen = False
        self._channels_first = False
        self._fired_any = False
        self._steps_taken = self._steps_at_update = self._amp_skipped = 0
        self._warned_no_forward = False
        self._closed = False
        self._caller_reads = False  # read_gradients() was called: the optimizer's pre-hook leaves gradients to it
        # Per-time-step statistics of recurrent layers (None without any: no hook, no cost). Not under
        # torch.distributed: their rows are not reduced over ranks (docs/through-time.md).
        self._time = TimeProbe.for_plan(self._plan, lambda: self._record) if reducer is None else None
        self._modes: list[tuple[int, AttentionMode]] = []  # attention sites whose forward is running
        self._pre_norms: dict[int, torch.Tensor] = {}     # param index -> gradient norm when it was complete
        self._last_out: tuple[int, torch.Tensor] | None = None  # the latest layer output (the logits' layer)
        self._schedule = FullSchedule(config)
        self._begin(self._start_step)

    # -- set-up ----------------------------------------------------------------------------------

    def attach(self) -> "Run":
        single = self._reducer is None
        try:
            for i, layer in enumerate(self._plan):
                if layer.kind != "attention":
                    self._handles.add(layer.module.register_forward_hook(functools.partial(self._on_forward, i)))
                if layer.attention and self.config.attention_every and single:
                    self._handles.add(layer.module.register_forward_pre_hook(
                        functools.partial(self._on_attention_enter, i), with_kwargs=True))
                    self._handles.add(layer.module.register_forward_hook(
                        functools.partial(self._on_attention_exit, i), always_call=True))
            if single:  # not under torch.distributed: these partials are not reduced over ranks (docs/transformers.md)
                self._handles.add(self.model.register_forward_hook(self._on_model_output))
            if self.config.pre_clip and single:
                for j, p in enumerate(self._params):
                    self._handles.add(p.register_post_accumulate_grad_hook(functools.partial(self._on_grad_ready, j)))
            if self._time is not None:
                self._time.attach(self._handles.add)
            for module, flag in layout_modules(self.model, self._plan):
                self._handles.add(module.register_forward_hook(functools.partial(self._on_layout, flag)))
            if self.optimizer is not None:
                self._handles.add(self.optimizer.register_step_pre_hook(self._on_pre_step))
                self._handles.add(self.optimizer.register_step_post_hook(self._on_post_step))
            if self.scaler is not None and callable(getattr(self.scaler, "update", None)):
                self._handles.add(AttributePatch(self.scaler, "update", self._wrap_scaler_update(self.scaler.update)))
        except BaseException:
            self._handles.remove()
            raise
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)  # a run left open (no `with`, no close()) still flushes at exit
        return self

    # -- the context manager -------------------------------------------------------------------

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        else:
            self.close(status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")

    def close(self, status: RunStatus = RunStatus.FINISHED, error: str | None = None) -> None:
        """Remove every hook, write what is left and mark the run finished (or failed)."""
        if self._closed:
            return
        self._closed = True
        self._handles.remove()
        if getattr(self, "_at_exit", None) is not None:
            atexit.unregister(self._at_exit)
        try:
            if self._late_logs:
                self._flush_late_logs()
            if self._guard is not None:
                self._writer.put(guard_actions=observe_tail(self._guard, self._step))
        finally:
            if self._guard is not None:
                self._guard.release()
            self._session.close(str(status), error)
            self._param_side.release()
            self._scratch = stats.Scratch()

    # -- user calls ----------------------------------------------------------------------------

    def log(self, **scalars: float | torch.Tensor) -> None:
        """Add scalars (loss, accuracy...) to the step in progress; tensors are read without a sync.

        Called after `optimizer.step()` and before the next forward pass, they belong to the
        step just taken. Values logged on steps that are not recorded are dropped.
        """
        for key, value in scalars.items():
            if not isinstance(value, (int, float, torch.Tensor)) or (isinstance(value, torch.Tensor) and value.numel() != 1):
                raise ConfigError(f"run.log({key}=...) takes a number or a one-element tensor, got {value!r:.80}.")
        self._check_open("log")
        if not self._forward_seen and self._step > self._start_step:
            step = self._step - 1
            if step % self.config.every == 0:
                self._late_logs.extend((step, k, _detached(v)) for k, v in scalars.items())
        elif self._record is not None:
            self._record.logged.update({k: _detached(v) for k, v in scalars.items()})

    def step(self) -> None:
        """Mark the end of a training step when watching without an optimizer (after backward)."""
        self._check_open("step")
        if self.optimizer is not None:
            raise ConfigError("run.step() is for watching without an optimizer; steps are taken from optimizer.step() here.")
        self._on_pre_step(None, (), {})
        self._on_post_step(None, (), {})

    def read_gradients(self) -> None:
        """Read the parameter gradients (and the weights before the update) of the step in progress, now.

        By default they are read in the optimizer's step pre-hook or, for `optimizer.step(closure)`
        (forward and backward run inside `step`), when the closure's first call returns. A
        framework whose closure does more after the backward (Lightning's clips the gradients)
        calls this from its hook between the backward and that (Lightning's
        `on_before_optimizer_step`), on every optimizer step: from the first call on, the hooks
        leave the gradients to it, and what they read earlier in the same step is replaced. The
        update (`update_ratio`) is still measured in the optimizer's post-hook.
        """
        self._check_open("read_gradients")
        rec = self._record
        if not self._caller_reads and rec is not None:  # step(closure): the pre-hook read before the backward
            self._param_side.discard(rec)
        self._caller_reads = True
        if rec is not None:
            self._read_step_gradients(rec)

    def view(self) -> RunView:
        """What this run has recorded so far, read back from the store (also after the block)."""
        return self._session.read(None if self._closed else self._flush_pending)

    def _flush_pending(self) -> None:
        if self._late_logs:
            self._flush_late_logs()
        self._writer.flush()

    @property
    def path(self) -> str:
        return self._session.path

    @property
    def layers(self) -> list[str]:
        return [layer.name for layer in self._plan]

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, store={self.path!r}, layers={len(self._plan)}, step={self._step})"

    # -- hooks (the hot path) ------------------------------------------------------------------

    def _on_forward(self, i: int, module: nn.Module, inputs: Any, output: Any) -> None:
        if not (torch.is_grad_enabled() and self.model.training):  # validation passes don't count
            return
        self._forward_seen = True
        rec = self._record
        if rec is None:
            return
        try:
            self._read_output(i, rec, output)
        except Exception as err:
            raise ProbeError(
                f"graddoctor failed reading the output of layer {self._plan[i].name!r} "
                f"({self._plan[i].type_name}) at step {rec.step}: {err}"
            ) from err

    def _read_output(self, i: int, rec: StepRecord, output: Any) -> None:
        y = first_float_tensor(output)
        if y is None:
            return
        layer = self._plan[i]
        self._fired_any = True
        if i not in rec.numel and i not in rec.fired:
            rec.fired.append(i)
        rec.calls.append(i)
        if not rec.full:  # the cheap tier: dL/d output of weight layers only (the depth profile's input)
            if y.requires_grad and layer.kind == "param":
                y.register_hook(functools.partial(self._on_out_grad, i, rec))
            return
        rec.numel[i].append(y.numel())
        self._last_out = (i, y)
        y_ = y.detach()
        total, shifted, squares = stats.moments(y_, self._scratch)
        rec.add(i, S, total)
        rec.add(i, SD, shifted)
        rec.add(i, SS, squares)
        if layer.counts_zeros:
            nonzero, fired, saturated = stats.activation_counts(
                y_, 1 if self._channels_first else -1, nonnegative=layer.nonnegative,
                saturation=layer.saturation, scratch=self._scratch,
            )
            rec.add(i, NZ, nonzero)
            if fired is not None:
                rec.add(i, UNIT, fired)
            if saturated is not None:
                rec.add(i, SAT, saturated)
        if not layer.is_activation and layer.layout is not None:
            self._channels_first = layer.layout
        if rec.hist and (i, HIST_ACT) not in rec.keys:
            rec.add(i, HIST_ACT, stats.histogram(y_))
        if y.requires_grad:
            y.register_hook(functools.partial(self._on_out_grad, i, rec))

    def _on_layout(self, channels_first: bool, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._record is not None and self._record.full:  # an unwatched conv/linear still says where units are
            self._channels_first = channels_first

    def _on_out_grad(self, i: int, rec: StepRecord, grad: torch.Tensor) -> None:
        if rec is self._record:  # a backward run after its step closed is not this step's
            g = grad.detach() if grad.requires_grad else grad  # (create_graph=True): no graph through our sums
            rec.add(i, OG, stats.sumsq(g))
            rec.add(i, OGS, g.sum(dtype=torch.float32) if g.dtype != torch.float64 else g.sum())  # tells overflow from Inf

    # -- transformers: attention sites, output logits, gradients before clipping (docs/transformers.md)

    def _attention_step(self) -> StepRecord | None:
        rec = self._record
        every = self.config.attention_every
        if rec is None or not every or rec.step % every or not rec.full or not (torch.is_grad_enabled() and self.model.training):
            return None
        return rec

    def _on_attention_enter(self, i: int, module: nn.Module, args: Any, kwargs: Any) -> None:
        rec = self._attention_step()
        if rec is None or self._modes:  # nested sites: the outer one is already reading
            return
        if i not in rec.numel and i not in rec.fired:
            rec.fired.append(i)
        sink = stats_sink(functools.partial(rec.add, i))
        if isinstance(module, nn.MultiheadAttention):
            read_mha(module, args, kwargs, sink)
            return
        mode = AttentionMode(sink)
        mode.__enter__()
        self._modes.append((i, mode))

    def _on_attention_exit(self, i: int, module: nn.Module, args: Any, output: Any) -> None:
        if self._modes and self._modes[-1][0] == i:
            _, mode = self._modes.pop()
            mode.__exit__(None, None, None)

    def _on_model_output(self, module: nn.Module, inputs: Any, output: Any) -> None:
        """log Z and max |logit| of the model's logits, on the layer that produced them (tied or not)."""
        rec, last, self._last_out = self._record, self._last_out, None
        if rec is None or last is None or not (torch.is_grad_enabled() and self.model.training):
            return
        logits = _logits_of(output)
        i, y = last
        if logits is None or logits.ndim < 2 or logits.shape[-1] < 2:
            return
        if not (y is logits or (isinstance(y, torch.Tensor) and y.ndim >= 1 and y.shape[-1] == logits.shape[-1]
                                and y.numel() == logits.numel())):  # the layer's output, or a reshape of it
            return
        lse, rows, top = logit_stats(logits)
        rec.add(i, LSE, lse)
        rec.add(i, LROWS, rows)
        rec.add(i, LMAX, top)

    def _on_grad_ready(self, j: int, p: torch.Tensor) -> None:
        """Post-accumulate-grad hook: the gradient is complete, before the loop can clip it."""
        if self._record is not None and self._record.full and p.grad is not None and not p.grad.is_sparse:
            g = p.grad.detach() if p.grad.requires_grad else p.grad
            self._pre_norms[j] = torch.linalg.vector_norm(g, dtype=_ACCUMULATE.get(g.dtype, g.dtype))

    def _on_pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> tuple[Any, Any] | None:
        rec = self._record
        # the hook gets step's own (args, kwargs): args[0] is the optimizer, args[1] the closure
        closure = (kwargs.get("closure") or (args[1] if len(args) > 1 else None)) if optimizer is not None else None
        if self._guard is not None:  # the skip gate runs on every step, recorded or not
            closure = guard_step(self._guard, self._step, closure)
        if rec is None or (optimizer is not None and self._caller_reads):
            return _with_closure(args, kwargs, closure) if callable(closure) and self._guard is not None else None
        if callable(closure):  # step(closure): forward and backward run inside step, after this hook
            return _with_closure(args, kwargs, self._read_after(closure, rec))
        self._read_step_gradients(rec)
        return None

    def _read_after(self, closure: Any, rec: StepRecord) -> Any:
        """`closure`, reading the step's gradients when its first call returns (LBFGS calls it again
        later, at moved weights): before any update, so the weight snapshot is still the step's own.
        A `read_gradients()` inside the closure (Lightning) has read them already."""
        pending = [True]

        def closure_then_read() -> Any:
            loss = closure()
            if pending and not self._caller_reads and rec is self._record:
                pending.clear()
                self._read_step_gradients(rec)
            return loss

        return closure_then_read

    def _read_step_gradients(self, rec: StepRecord) -> None:
        self._param_side.before_update(rec)
        if self._local is None:  # under FSDP the shards' pre-clip norms are not reduced: not recorded
            for j, norm in self._pre_norms.items():
                rec.add(self._owner[j], GPRE, norm)
        self._pre_norms = {}
        scale = self._amp_scale()
        if scale is not None:
            rec.logged["amp_scale"] = scale
            rec.logged["amp_skipped_steps"] = float(self._amp_skipped)

    def _on_post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        rec = self._record
        if self._guard is not None:  # before the update is measured: a dropped update measures 0
            self._guard.after_update()
        if rec is not None:
            if self.optimizer is not None:
                self._param_side.after_update(rec)
            self._close(rec)
        self._schedule.step_ended(self._step, rec is not None, rec is not None and rec.full)
        self._steps_taken += 1
        self._begin(self._step + 1)
        if self._guard is not None and self._guard.stop_event is not None:
            self._writer.flush()  # every step before the stop is in the store when GuardStop is raised
            raise GuardStop(self._guard.stop_event)

    def _wrap_scaler_update(self, update: Any) -> Any:
        """GradScaler.update runs once per iteration, after scaler.step: if no optimizer step ran in
        between, GradScaler skipped it (inf/NaN in the scaled gradients). That iteration is not a
        step: its partial statistics are dropped, not merged into the next step, and counted."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if self._steps_taken == self._steps_at_update and self._record is not None:
                self._amp_skipped += 1
                self._begin(self._step)
                self._forward_seen = True  # a run.log after this belongs to the step to come
            self._steps_at_update = self._steps_taken
            return update(*args, **kwargs)

        return wrapped

    # -- step bookkeeping ----------------------------------------------------------------------

    def _begin(self, step: int) -> None:
        self._step = step
        self._writer.next_step = step
        self._forward_seen = False
        self._pre_norms, self._last_out = {}, None
        if step % self.config.every:
            self._record = None
        else:
            hist_every = self.config.hist_every
            self._record = StepRecord(step, hist=bool(hist_every) and step % hist_every == 0,
                                      full=self._schedule.full_at(step))
        full = self._record if self._record is not None and self._record.full else None
        if self._time is not None:  # per-time-step statistics: full-tier steps; W_hh's bound: first, then with histograms
            self._time.begin(full, bound=full is not None and full.hist)

    def _amp_scale(self) -> torch.Tensor | None:
        if self.scaler is None or not self.scaler.is_enabled():
            return None
        scale = getattr(self.scaler, "_scale", None)  # the device tensor: get_scale() would sync
        return scale.detach().reshape(()) if isinstance(scale, torch.Tensor) else None

    def _close(self, rec: StepRecord) -> None:
        """End a recorded step: one transfer to the host; the rest happens in the writer's thread."""
        no_forward = self._check_forwards_seen(rec)
        scalars = self._late_logs + [(rec.step, k, v) for k, v in rec.logged.items()]
        self._late_logs = []
        if self.optimizer is not None:  # read now: a scheduler changes it before the next flush
            scalars += [(rec.step, f"lr/group{g}", group["lr"]) for g, group in enumerate(self.optimizer.param_groups)]
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
            scalars=_scalar_rows(scalars, host[n_time:]),
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

    def _flush_late_logs(self) -> None:
        late, self._late_logs = self._late_logs, []
        self._writer.put(scalars=_scalar_rows(late, transfer([v for _, _, v in late if isinstance(v, torch.Tensor)])))

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

    def _check_forwards_seen(self, rec: StepRecord) -> bool:
        """Refuse, at the first recorded step, a training step whose forward our hooks never saw.

        Under torch.distributed it returns True instead of raising: the step's gather then raises
        on every rank, never on this one alone (the others would wait for it).
        """
        if self._fired_any or self._warned_no_forward or not any(code == GN for _, code in rec.keys):
            return False
        if not self.model.training:
            self._warned_no_forward = True
            if self._reducer is not None and self._reducer.rank != 0:
                return False  # under torch.distributed, rank 0 alone warns (STYLE 9)
            warnings.warn(
                "graddoctor.watch: the model is in eval() mode while training, so forward passes are not "
                "counted (they look like validation): no activation or dL/d output statistics are recorded. "
                "Call model.train() to record them.",
                stacklevel=4,
            )
            return False
        if self._reducer is not None:
            return True
        self._handles.remove()
        raise ProbeError(f"graddoctor.watch {NO_FORWARD}")

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ConfigError(f"run.{what}() was called after the watch block ended; call it inside the `with` block.")


def _close_at_exit(ref: "weakref.ref[Run]") -> None:
    run = ref()
    if run is not None:
        run.close(error="closed at interpreter exit: the run was never closed (use `with graddoctor.watch(...)`)")


def _logits_of(output: Any) -> torch.Tensor | None:
    """The logits in a model's output: the tensor itself, a `logits` field (Hugging Face), or the
    first floating-point tensor of 2 or more dims."""
    if isinstance(output, torch.Tensor):
        return output if output.is_floating_point() else None
    found = output.get("logits") if isinstance(output, dict) else getattr(output, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    if isinstance(output, (tuple, list)):
        return next((t for t in output if isinstance(t, torch.Tensor) and t.is_floating_point() and t.ndim >= 2), None)
    return None


def _scalar_rows(scalars: list, host_tail: list[np.ndarray]) -> list[tuple[int, str, float]]:
    it = iter(host_tail)
    return [(s, k, float(next(it)) if isinstance(v, torch.Tensor) else float(v)) for s, k, v in scalars]


def _with_closure(args: tuple, kwargs: dict, closure: Any) -> tuple[tuple, dict]:
    """`optimizer.step`'s (args, kwargs) with its closure replaced, wherever it was passed."""
    if "closure" in kwargs:
        return args, {**kwargs, "closure": closure}
    return (args[0], closure, *args[2:]), kwargs


def _detached(value: float | torch.Tensor) -> float | torch.Tensor:
    return value.detach().reshape(()) if isinstance(value, torch.Tensor) else float(value)
