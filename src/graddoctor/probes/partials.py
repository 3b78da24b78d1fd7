"""The partial results a recorded step keeps: one table of codes, each with how its values combine.

A hook adds a partial result to the step's `StepRecord` under (layer, code). Values of one code
and layer combine over the module's calls and the step's micro-batches by `record.aggregate` (on
the host, float64) as `combine` says, and over ranks by probes/_dist_pack.py as `ranks` says; the
statistics' formulas (probes/derive.py, and its vectorised twin probes/fastrows.py) read the
combined values. `STATISTICS` says which codes each statistic is computed from.
Pure data: testable without a model.
"""

from __future__ import annotations

import dataclasses
import enum

from ..config import Stat


class Combine(enum.Enum):
    """How a code's values of one layer combine over calls and micro-batches (`record.aggregate`)."""

    SUM = "sum"                      # added
    NORM_SQUARES = "norm squares"    # each value a norm (one per parameter): their squares added, the layer's sum of squares
    SQUARES_INTO = "squares into"    # already a sum of squares: added into the sum of its norm code (`into`)
    MAX = "max"                      # elementwise max; NaN propagates
    UNIT_MAX = "unit max"            # per-unit vectors: elementwise max; a call with another number of units is left out
    PER_CALL = "per call"            # a list, one value per call: derive.moments combines them (Chan et al.)
    FIRST = "first"                  # the step's first value only (histograms: the first call's)


class Ranks(enum.Enum):
    """How a code's per-layer values combine over ranks under torch.distributed (probes/_dist_pack.py)."""

    SUM = "sum"              # summed (parameters replicated by DDP: rank 0's alone); dL/d output also / world**2
    MOMENTS = "moments"      # each rank's (n, mean, M2), combined by Chan's formula
    MAX = "max"              # elementwise max (a unit is dead only if silent on every rank)
    HISTOGRAM = "histogram"  # summed on the union of the ranks' ranges
    LOCAL = "local"          # not reduced: recorded on one process only (no such hook under torch.distributed)


@dataclasses.dataclass(frozen=True)
class Partial:
    code: str
    meaning: str
    combine: Combine
    ranks: Ranks
    into: str | None = None  # SQUARES_INTO: the norm code whose layer sum of squares this adds to


S, SD, SS, NZ, SAT, OG, GN, WN, UN, GSQ, WSQ, USQ, UNIT, HIST_ACT, HIST_GRAD = (
    "s", "sd", "ss", "nz", "sat", "og", "gn", "wn", "un", "gsq", "wsq", "usq", "unit", "hist_act", "hist_grad",
)
OGS, GPRE, LSE, LROWS, LMAX, AMAX, AENT, AROWS = "ogs", "gpre", "lse", "lrows", "lmax", "amax", "aent", "arows"
UE = "ue"

PARTIALS: dict[str, Partial] = {p.code: p for p in (
    Partial(S, "the shift k of a call's output (its first element)", Combine.PER_CALL, Ranks.MOMENTS),
    Partial(SD, "sum of (y - k) over a call's output", Combine.PER_CALL, Ranks.MOMENTS),
    Partial(SS, "sum of (y - k)**2 over a call's output", Combine.PER_CALL, Ranks.MOMENTS),
    Partial(NZ, "count of nonzero output elements", Combine.SUM, Ranks.SUM),
    Partial(SAT, "count of saturated output elements", Combine.SUM, Ranks.SUM),
    Partial(OG, "sum of squares of dL/d output", Combine.SUM, Ranks.SUM),
    Partial(OGS, "sum of dL/d output: finite iff its values are (tells a float32 overflow of OG from NaN/Inf)",
            Combine.SUM, Ranks.LOCAL),
    Partial(GN, "norm of one parameter's gradient (read at the optimizer step)", Combine.NORM_SQUARES, Ranks.SUM),
    Partial(WN, "norm of one parameter before the update", Combine.NORM_SQUARES, Ranks.SUM),
    Partial(UN, "norm of one parameter's update", Combine.NORM_SQUARES, Ranks.SUM),
    Partial(GPRE, "norm of one parameter's gradient when it was complete, before any clipping",
            Combine.NORM_SQUARES, Ranks.LOCAL),
    Partial(GSQ, "a layer's gradient sum of squares, already combined across ranks", Combine.SQUARES_INTO, Ranks.SUM, GN),
    Partial(WSQ, "sum of squares of one parameter before the update", Combine.SQUARES_INTO, Ranks.SUM, WN),
    Partial(USQ, "sum of squares of one parameter's update", Combine.SQUARES_INTO, Ranks.SUM, UN),
    Partial(UE, "one parameter's estimated update sum of squares: (n/m) x its m-element sample's (update_ratio_est)",
            Combine.SUM, Ranks.SUM),
    Partial(UNIT, "per unit: max |y| over samples and positions", Combine.UNIT_MAX, Ranks.MAX),
    Partial(HIST_ACT, "histogram of the output: [lo, hi, nonfinite, counts...]", Combine.FIRST, Ranks.HISTOGRAM),
    Partial(HIST_GRAD, "histogram of the layer's gradients", Combine.FIRST, Ranks.HISTOGRAM),
    Partial(LSE, "sum of log Z over the logits' rows", Combine.SUM, Ranks.LOCAL),
    Partial(LROWS, "rows of the logits", Combine.SUM, Ranks.LOCAL),
    Partial(LMAX, "max |logit|", Combine.MAX, Ranks.LOCAL),
    Partial(AMAX, "max attention logit", Combine.MAX, Ranks.LOCAL),
    Partial(AENT, "per head: sum of the attention rows' entropies", Combine.SUM, Ranks.LOCAL),
    Partial(AROWS, "per head: attention rows (queries)", Combine.SUM, Ranks.LOCAL),
)}

COMBINE = {code: p.combine for code, p in PARTIALS.items()}  # code -> its Combine, what aggregate dispatches on
SQUARED = {code: p.into for code, p in PARTIALS.items() if p.combine is Combine.SQUARES_INTO}  # GSQ -> GN, ...
SQUARES_OF = {into: code for code, into in SQUARED.items()}  # GN -> GSQ, ...: where a norm code's squares go
NORMS = frozenset(c for c, p in PARTIALS.items() if p.combine is Combine.NORM_SQUARES)
PER_CALL = tuple(c for c, p in PARTIALS.items() if p.combine is Combine.PER_CALL)
MAXED = tuple(c for c, p in PARTIALS.items() if p.combine is Combine.MAX)
FIRST_ONLY = tuple(c for c, p in PARTIALS.items() if p.combine is Combine.FIRST)
REDUCED = frozenset(c for c, p in PARTIALS.items() if p.ranks is not Ranks.LOCAL)  # what ranks exchange


@dataclasses.dataclass(frozen=True)
class Statistic:
    """One stored statistic: the partial codes it reads (after `aggregate`) and its formula."""

    stat: Stat
    codes: tuple[str, ...]
    formula: str


STATISTICS: dict[Stat, Statistic] = {s.stat: s for s in (
    Statistic(Stat.GRAD_NORM, (GN, GSQ), "sqrt(sum of squares of the layer's gradients)"),
    Statistic(Stat.GRAD_RMS, (GN, GSQ), "sqrt(sum of squares / number of parameters)"),
    Statistic(Stat.NONFINITE_FRAC, (GN,), "NaN/Inf gradient elements (recounted when the norm is not finite) / parameters"),
    Statistic(Stat.WEIGHT_NORM, (WN, WSQ), "sqrt(sum of squares of the layer's parameters before the update)"),
    Statistic(Stat.UPDATE_RATIO, (UN, USQ, WN, WSQ), "sqrt(update sum of squares) / weight_norm"),
    Statistic(Stat.UPDATE_RATIO_EST, (UE, WN, WSQ), "sqrt(estimated update sum of squares) / weight_norm"),
    Statistic(Stat.GRAD_NORM_PRE_CLIP, (GPRE,), "sqrt(sum of squares of the gradients before clipping) / amp scale"),
    Statistic(Stat.OUT_GRAD_NORM, (OG, OGS), "sqrt(sum of squares of dL/d output) / amp scale"),
    Statistic(Stat.ACT_MEAN, (S, SD, SS), "mean over every call's elements (derive.moments)"),
    Statistic(Stat.ACT_STD, (S, SD, SS), "sqrt(population variance over every call's elements)"),
    Statistic(Stat.ACT_ZERO_FRAC, (NZ,), "1 - nonzero elements / elements"),
    Statistic(Stat.SATURATED_FRAC, (SAT,), "saturated elements / elements"),
    Statistic(Stat.DEAD_FRAC, (UNIT,), "share of units whose max |y| is 0"),
    Statistic(Stat.LOGIT_LSE, (LSE, LROWS), "sum of log Z / rows"),
    Statistic(Stat.LOGIT_MAX, (LMAX,), "max |logit|"),
    Statistic(Stat.ATTN_LOGIT_MAX, (AMAX,), "max attention logit"),
    Statistic(Stat.ATTN_ENTROPY, (AENT, AROWS), "sum of entropies / rows, over all heads"),
    Statistic(Stat.ATTN_ENTROPY_MIN_HEAD, (AENT, AROWS), "min over heads of entropy sum / rows"),
)}
