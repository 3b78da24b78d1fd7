"""Names shared by several layers: statistic names, layer roles, run statuses, the watch options."""

from __future__ import annotations

import dataclasses
import enum
from typing import Collection, Sequence

from ._validate import MAX_STEPS, check_int, check_number, check_strings
from .errors import ArgumentTypeError, ConfigError


class Stat(str, enum.Enum):
    """Statistic names, as used in the store, the API, JSON and plots. A name never changes meaning."""

    GRAD_NORM = "grad_norm"
    GRAD_RMS = "grad_rms"
    WEIGHT_NORM = "weight_norm"
    UPDATE_RATIO = "update_ratio"
    UPDATE_RATIO_EST = "update_ratio_est"       # update_ratio estimated from a fixed 1/67 sample of each weight
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

    Two tiers (docs/overhead.md): the *cheap* tier (per-layer gradient norms, dL/d output norms,
    non-finite detection, logged scalars, learning rates) at every recorded step, and the *full*
    tier (activation moments, zero/dead/saturated fractions, weight norms, update_ratio,
    histograms, per-time-step, logit, attention and pre-clip statistics) on its own schedule.

    Attributes:
        every: record one optimizer step in `every` (steps 0, every, 2*every, ...): the cheap tier.
        full_every: record the full tier too at optimizer steps that are multiples of this (a
            multiple of `every`); None (the default) means 10 * every.
        full_first: the first `full_first` recorded steps of a run (steps 0 to
            (full_first - 1) * every) record the full tier too: the state at initialisation, which
            the diagnosis rules compare the end against; 0 turns it off.
        budget: instead of a fixed `full_every`, the share of step time the full tier may add
            (e.g. 0.03); watch times its own recorded steps on the host (no sync) and sets the
            full tier's interval from them. None (the default): `full_every` as given.
        attention_every: read attention logits (max, entropy) at optimizer steps that are multiples
            of this (full-tier steps); 0 turns it off; None (the default) means full_every.
        pre_clip: read each gradient's norm when it is complete (post-accumulate-grad hook), before
            the loop can clip it: grad_norm_pre_clip and the per-step clip_factor.
        hist_every: record 64-bin histograms at optimizer steps that are multiples of this
            (full-tier steps); 0 turns histograms off; None (the default) means 10 * full_every,
            one recorded step in 100. Must be a multiple of `every`.
        update_ratio: how ||Δw||/||w|| across the optimizer step is measured on full-tier steps.
            "sample" (the default; True means the same): copy a fixed sample of about 1/67 of each
            parameter's elements before the step and record the estimate `update_ratio_est`
            (memory about 1.5 % of the parameters' bytes during the step; error in
            docs/statistics.md). "exact": copy every trainable parameter and record the exact
            `update_ratio` (memory: one copy of the parameters during a full-tier step). False:
            neither. Whatever is copied is released after the step.
        include: fnmatch patterns over layer names; only matching layers are watched.
        exclude: fnmatch patterns over layer names; matching layers are not watched.
        flush_seconds: the store is at most about this far behind training.
        stats: how activation partials are computed: "fused" (the default: fewer ops, the same
            values) or "reference" (the plain kernels the fused path is tested against).
    """

    every: int = 1              # every step: the cheap tier is cheap enough to leave on (docs/overhead.md)
    hist_every: int | None = None  # histograms cost ~10x a plain record: one record in 100
    update_ratio: str | bool = "sample"  # "exact" keeps a full copy of the parameters during a full-tier step
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    flush_seconds: float = 1.0  # a SIGKILL loses at most about this much
    attention_every: int | None = None  # attention logits cost O(T^2) per head: one recorded step in 10
    pre_clip: bool = True       # gradient norms also read when each gradient is complete (before clipping)
    full_every: int | None = None  # the full tier costs ~1.2-1.5x a step: one recorded step in 10
    full_first: int = 10        # ...and the run's first 10 recorded steps: the rules' "at the start"
    budget: float | None = None  # or: the full tier's share of step time, its interval chosen from that
    stats: str = "fused"        # activation partials: "fused" (fewer ops) or "reference" (the oracle), probes/fused.py

    def __post_init__(self) -> None:
        _check_int("every", self.every, minimum=1)
        if self.full_every is None:
            object.__setattr__(self, "full_every", 10 * self.every)
        _check_int("full_every", self.full_every, minimum=1)
        if self.full_every % self.every:
            raise ConfigError(f"full_every={self.full_every} is not a multiple of every={self.every}: the full "
                              f"tier is recorded on recorded steps only. Use full_every="
                              f"{self.every * max(1, self.full_every // self.every)}.")
        _check_int("full_first", self.full_first, minimum=0)
        if self.budget is not None:
            check_number("budget", self.budget, positive=True, maximum=10.0)
        if self.hist_every is None:
            object.__setattr__(self, "hist_every", 10 * self.full_every)
        _check_int("hist_every", self.hist_every, minimum=0)
        if self.attention_every is None:
            object.__setattr__(self, "attention_every", self.full_every)
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
        object.__setattr__(self, "update_ratio", _update_mode(self.update_ratio))
        if self.stats not in ("fused", "reference"):
            raise ConfigError(f'stats={self.stats!r}: expected "fused" (the default) or "reference" (the oracle path).')
        check_number("flush_seconds", self.flush_seconds, positive=True, maximum=86_400.0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def full_at(self, step: int, full_every: int | None = None) -> bool:
        """Whether recorded step `step` records the full tier (histogram and attention steps are
        full-tier steps too). `full_every`: the interval in use, when `budget` has moved it."""
        return (step < self.full_first * self.every or step % (full_every or self.full_every) == 0
                or bool(self.hist_every) and step % self.hist_every == 0
                or bool(self.attention_every) and step % self.attention_every == 0)


UPDATE_MODES = ("sample", "exact")


def _update_mode(value: object) -> str | bool:
    """update_ratio as stored: "sample", "exact" or False (True is "sample", the default)."""
    if value is True:
        return "sample"
    if value is False or isinstance(value, str) and value in UPDATE_MODES:
        return value  # type: ignore[return-value]
    raise (ConfigError if isinstance(value, str) else ArgumentTypeError)(f"update_ratio={value!r}: expected \"sample\" (the default: estimate it from a sample of each "
                      f"parameter, memory ~1.5 % of the parameters), \"exact\" (keep a full copy of the parameters "
                      f"during a full-tier step) or False (do not measure it).")


def update_stat(recorded: Collection[str]) -> str:
    """The update-ratio statistic a reader should use: the exact `update_ratio` where it was
    recorded, else the estimate `update_ratio_est` where that was, else `update_ratio` (absent)."""
    if Stat.UPDATE_RATIO.value not in recorded and Stat.UPDATE_RATIO_EST.value in recorded:
        return Stat.UPDATE_RATIO_EST.value
    return Stat.UPDATE_RATIO.value


UPDATE_STATS = frozenset({Stat.UPDATE_RATIO.value, Stat.UPDATE_RATIO_EST.value})


def _check_int(name: str, value: object, *, minimum: int) -> None:
    check_int(name, value, minimum=minimum, maximum=MAX_STEPS)


def as_patterns(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)
