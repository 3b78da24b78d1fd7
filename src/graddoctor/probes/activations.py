"""Activation probes: what a step's forward pass shows, and the gradients arriving at its outputs.

Forward hooks read each watched layer's output (moments, zero/saturated/fired counts, the
histogram) and put a tensor hook on it for ‖dL/d output‖; modules outside the plan still say
where units are (channel layout); attention sites read their logits while their forward runs;
the model's output gives the logits' log Z and max |logit|; post-accumulate-grad hooks read each
parameter's gradient norm when it is complete, before the loop can clip it. Everything is added
to the step's `StepRecord`, on the device (docs/statistics.md, docs/transformers.md).

The step clock (probes/clock.py) says which record is current: `begin(rec)` at each step, None
on steps that are not recorded, when every hook returns at once.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import torch
from torch import nn

from ..config import WatchConfig
from ..errors import ProbeError
from . import stats
from .attention import logit_stats
from .fused import OutputReader
from .hooks import HandleGroup
from .intercept import AttentionMode, read_mha, stats_sink
from .record import GN, GPRE, HIST_ACT, LMAX, LROWS, LSE, StepRecord
from .select import LayerPlan, first_float_tensor, layout_modules

_ACCUMULATE = {torch.float16: torch.float32, torch.bfloat16: torch.float32}  # half precision sums in float32

NO_FORWARD = (
    "saw gradients but no forward pass of the watched model: it probably ran through a torch.compile'd "
    "wrapper that was called before watch() attached its hooks, and PyTorch ignores hooks added after "
    "compilation. Call watch() before the first call of the compiled model, or torch._dynamo.reset() before watch()."
)


class ActivationProbes:
    """The hooks on modules, their outputs and the parameters' gradients of one Run."""

    def __init__(
        self,
        model: nn.Module,
        plan: list[LayerPlan],
        params: list[torch.Tensor],
        config: WatchConfig,
        scratch: stats.Scratch,
        *,
        reducer: Any,
        handles: HandleGroup,
    ) -> None:
        self.model, self.config = model, config
        self._plan, self._params, self._scratch = plan, params, scratch
        self._outputs = OutputReader(config.stats)  # activation and dL/d output partials (probes/fused.py)
        self._reducer, self._handles = reducer, handles  # handles: all of the Run's, removed when a step is refused
        self._single = reducer is None  # one process: the logit, attention and pre-clip partials are not reduced
        self._record: StepRecord | None = None
        self._forward_seen = False  # a training forward ran in this step (recorded or not)
        self._fired_any = False     # a watched layer's output was read, ever
        self._warned_no_forward = False
        self._channels_first = False
        self._modes: list[tuple[int, AttentionMode]] = []  # attention sites whose forward is running
        self._pre_norms: dict[int, torch.Tensor] = {}     # param index -> gradient norm when it was complete
        self._last_out: tuple[int, torch.Tensor] | None = None  # the latest layer output (the logits' layer)

    def attach(self, add: Callable[[Any], None]) -> None:
        single = self._single
        for i, layer in enumerate(self._plan):
            if layer.kind != "attention":
                add(layer.module.register_forward_hook(functools.partial(self._on_forward, i)))
            if layer.attention and self.config.attention_every and single:
                add(layer.module.register_forward_pre_hook(functools.partial(self._on_attention_enter, i), with_kwargs=True))
                add(layer.module.register_forward_hook(functools.partial(self._on_attention_exit, i), always_call=True))
        if single:  # not under torch.distributed: these partials are not reduced over ranks (docs/transformers.md)
            add(self.model.register_forward_hook(self._on_model_output))
        if self.config.pre_clip and single:
            for j, p in enumerate(self._params):
                add(p.register_post_accumulate_grad_hook(functools.partial(self._on_grad_ready, j)))
        for module, flag in layout_modules(self.model, self._plan):
            add(module.register_forward_hook(functools.partial(self._on_layout, flag)))

    def begin(self, rec: StepRecord | None) -> None:
        """A new step: recorded into `rec`, or not (None)."""
        self._forward_seen = False
        self._pre_norms, self._last_out = {}, None
        self._record = rec

    @property
    def forward_seen(self) -> bool:
        """A training forward pass ran in the step in progress (a `run.log` then belongs to it)."""
        return self._forward_seen

    def mark_forward_seen(self) -> None:
        self._forward_seen = True

    def put_pre_clip(self, rec: StepRecord, owner: list[int]) -> None:
        """Move the gradient norms read when each gradient was complete into `rec` (GPRE)."""
        for j, norm in self._pre_norms.items():  # none under torch.distributed: no pre-clip hooks there
            rec.add(owner[j], GPRE, norm)
        self._pre_norms = {}

    def release(self) -> None:
        self._scratch = stats.Scratch()
        self._outputs = OutputReader(self.config.stats)
        self._record, self._last_out, self._pre_norms = None, None, {}

    # -- forward hooks and output gradients (the hot path) -------------------------------------

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
        for code, value in self._outputs.output(y, layer, 1 if self._channels_first else -1):
            rec.add(i, code, value)
        if not layer.is_activation and layer.layout is not None:
            self._channels_first = layer.layout
        if rec.hist and (i, HIST_ACT) not in rec.keys:
            rec.add(i, HIST_ACT, stats.histogram(y.detach()))
        if y.requires_grad:
            y.register_hook(functools.partial(self._on_out_grad, i, rec))

    def _on_layout(self, channels_first: bool, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._record is not None and self._record.full:  # an unwatched conv/linear still says where units are
            self._channels_first = channels_first

    def _on_out_grad(self, i: int, rec: StepRecord, grad: torch.Tensor) -> None:
        if rec is self._record:  # a backward run after its step closed is not this step's
            for code, value in self._outputs.out_grad(grad):  # OG, and OGS: tells overflow from Inf
                rec.add(i, code, value)

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

    # -- the step's check ------------------------------------------------------------------------

    def check_forwards_seen(self, rec: StepRecord) -> bool:
        """Refuse, at the first recorded step, a training step whose forward our hooks never saw.

        Under torch.distributed it returns True instead of raising: the step's gather
        then raises on every rank, never on this one alone (the others would wait for it).
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
                stacklevel=3,  # the optimizer's step, through the clock's post-hook
            )
            return False
        if self._reducer is not None:
            return True
        self._handles.remove()
        raise ProbeError(f"graddoctor.watch {NO_FORWARD}")


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
