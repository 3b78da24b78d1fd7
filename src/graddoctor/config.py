"""Names shared by several layers: statistic names, layer roles, run statuses, the watch options."""

from __future__ import annotations

import dataclasses
import enum
from typing import Sequence

from ._validate import MAX_STEPS, check_bool, check_int, check_number, check_strings
from .errors import ConfigError


class Stat(str, enum.Enum):
    """Statistic names, as used in the store, the API, JSON and plots. A name never changes meaning."""

    GRAD_NORM = "grad_norm"
    GRAD_RMS = "grad_rms"
    WEIGHT_NORM = "weight_norm"
    UPDATE_RATIO = "update_ratio"
    NONFINITE_FRAC = "nonfinite_frac"
    OUT_GRAD_NORM = "out_grad_norm"
    ACT_MEAN = "act_mean"
    ACT_STD = "act_std"
    ACT_ZERO_FRAC = "act_zero_frac"
    DEAD_FRAC = "dead_frac"
    SATURATED_FRAC = "saturated_frac"
    # transformers and instability (docs/transformers.md)
    GRAD_NORM_PRE_CLIP = "grad_norm_pre_clip"   # grad_norm read when each gradient is complete, before clipping
    LOGIT_LSE = "logit_lse_mean"                # mean over rows of log Z = logsumexp over classes
    LOGIT_MAX = "logit_abs_max"                 # max |logit|
    ATTN_LOGIT_MAX = "attn_logit_max"           # max attention logit q·k·scale (+ float mask) over kept keys
    ATTN_ENTROPY = "attn_entropy"               # mean attention entropy over heads and query rows (nats)
    ATTN_ENTROPY_MIN_HEAD = "attn_entropy_min_head"  # the lowest per-head mean entropy
    NORM_OVERFLOW = "norm_overflow"             # 1: a float32 sum of squares of finite values overflowed

    def __str__(self) -> str:
        return self.value


class Role(str, enum.Enum):
    """What a layer is, decided once when `watch` plans the layers (probes.roles) and stored with it.

    Every rule, figure, study and `compare` reads this one classification (docs/store.md, roles).
    """

    WEIGHT = "weight"          # owns weights that carry the back-propagated signal: Linear, Conv, HF Conv1D, ...
    NORM = "norm"              # normalisation: BatchNorm, LayerNorm, GroupNorm, RMSNorm, ...
    ACTIVATION = "activation"  # an activation module (ReLU, Tanh, GELU, transformers' and timm's)
    EMBEDDING = "embedding"    # a lookup table: an optimizer step touches only the rows in the batch
    RECURRENT = "recurrent"    # RNN, LSTM, GRU (and cells): depth in time
    OTHER = "other"            # anything else the plan reads (an attention container without weights)

    def __str__(self) -> str:
        return self.value


class RunStatus(str, enum.Enum):
    RUNNING = "running"      # the writer is alive (or died without a trace: see CRASHED)
    FINISHED = "finished"    # the `with` block ended normally
    FAILED = "failed"        # the `with` block raised; the error is in runs.error
    CRASHED = "crashed"      # never stored: derived by readers for a RUNNING run whose process is gone

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class WatchConfig:
    """What `graddoctor.watch` records and when. Stored with the run as JSON.

    Attributes:
        every: record one optimizer step in `every` (steps 0, every, 2*every, ...).
        attention_every: read attention logits (max, entropy) at optimizer steps that are multiples
            of this; 0 turns it off; None (the default) means 10 * every.
        pre_clip: read each gradient's norm when it is complete (post-accumulate-grad hook), before
            the loop can clip it: grad_norm_pre_clip and the per-step clip_factor.
        hist_every: record 64-bin histograms at optimizer steps that are multiples of this;
            0 turns histograms off; None (the default) means 100 * every, one recorded step in
            100. Must be a multiple of `every`.
        update_ratio: keep a copy of the trainable parameters on recorded steps to measure
            ||Δw||/||w|| across the optimizer step (memory: one copy of the parameters).
        include: fnmatch patterns over layer names; only matching layers are watched.
        exclude: fnmatch patterns over layer names; matching layers are not watched.
        flush_seconds: the store is at most about this far behind training.
    """

    every: int = 1              # every step: x1.12-1.19 step time on the reference MLP/CNN, about x1.0 at
                                # every=10, which tiny or launch-bound models want (docs/overhead.md)
    hist_every: int | None = None  # histograms cost ~10x a plain record: one record in 100
    update_ratio: bool = True   # the snapshot is the one cost proportional to model size
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    flush_seconds: float = 1.0  # a SIGKILL loses at most about this much
    attention_every: int | None = None  # attention logits cost O(T^2) per head: one recorded step in 10
    pre_clip: bool = True       # gradient norms also read when each gradient is complete (before clipping)

    def __post_init__(self) -> None:
        _check_int("every", self.every, minimum=1)
        if self.hist_every is None:
            object.__setattr__(self, "hist_every", 100 * self.every)
        _check_int("hist_every", self.hist_every, minimum=0)
        if self.attention_every is None:
            object.__setattr__(self, "attention_every", 10 * self.every)
        _check_int("attention_every", self.attention_every, minimum=0)
        if self.attention_every and self.attention_every % self.every:
            raise ConfigError(f"attention_every={self.attention_every} is not a multiple of every={self.every}: "
                              f"attention is read on recorded steps only.")
        if self.hist_every and self.hist_every % self.every:
            raise ConfigError(
                f"hist_every={self.hist_every} is not a multiple of every={self.every}: histograms "
                f"are taken on recorded steps only. Use hist_every={self.every * max(1, self.hist_every // self.every)}."
            )
        for field in ("include", "exclude"):
            object.__setattr__(self, field, check_strings(f"{field} (fnmatch patterns)", getattr(self, field)))
        check_bool("update_ratio", self.update_ratio)
        check_number("flush_seconds", self.flush_seconds, positive=True, maximum=86_400.0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_int(name: str, value: object, *, minimum: int) -> None:
    check_int(name, value, minimum=minimum, maximum=MAX_STEPS)


def as_patterns(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
