"""One recorded step's partial statistics as one flat float64 vector per rank, and back.

Each rank reduces its own step record (calls, micro-batches) to per-layer partials in a layout
every rank derives from the same plan and the same agreed unit counts, so the vectors have the
same length everywhere and one all_gather moves them. Each vector's header carries the unit counts
its rank measured, so a count the layout lacks is seen by every rank in the same gathered matrix
(`agreed_units`) and they re-lay out alike, with no exchange of its own. Rank 0 then combines the ranks' partials with the reduction each quantity
needs: sums (squared norms of shards, element counts), Chan's formula (mean and variance),
elementwise max (per-unit max |y|: a unit is dead only if silent on every rank), histograms
summed on a common range: each code's `Ranks` rule in probes/partials.py, whose LOCAL codes (logits,
attention, pre-clip norms) are not packed. Pure numpy: testable without a process group.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ProbeError
from .derive import moments
from .partials import SQUARES_OF
from .record import GN, HIST_ACT, HIST_GRAD, NZ, OG, S, SAT, SD, SS, UE, UN, UNIT, WN, Key, aggregate
from .select import LayerPlan
from .stats import HIST_BINS

# Header: the step, 1 when this rank's hooks saw gradients but never a forward pass (Run refuses
# that on every rank), then per layer the length of the per-unit vector this rank measured (0: none).
UNITS_AT = 2
PARAM = 8                  # sum g^2, sum w^2, has update, sum dw^2, NaN/Inf gradient count, has w (full tier),
                           # has the update's estimate, estimated sum dw^2 (update_ratio_est)
OUTPUT = 7                 # n, mean, M2, nonzero count, saturated count, has dL/dy, sum (dL/dy)^2
HIST = 1 + 3 + HIST_BINS   # present flag, then [lo, hi, nonfinite, counts...]


@dataclasses.dataclass
class Layout:
    """Where each layer's partials sit in the flat vector. Same on every rank by construction."""

    plan: list[LayerPlan]
    units: dict[int, int]  # layer -> number of units of its per-unit vector (agreed by all ranks)
    hist: bool

    def header(self) -> int:
        return UNITS_AT + len(self.plan)

    def sections(self) -> list[tuple[int, str, int, int]]:
        """(layer, section, offset, length), in plan order."""
        out, offset = [], self.header()
        for i, layer in enumerate(self.plan):
            parts = [("p", PARAM)] if layer.params else []
            parts.append(("a", OUTPUT))
            if i in self.units:
                parts.append(("u", 1 + self.units[i]))
            if self.hist:
                parts.append(("ha", HIST))
                if layer.params:
                    parts.append(("hg", HIST))
            for name, length in parts:
                out.append((i, name, offset, length))
                offset += length
        return out

    def size(self) -> int:
        last = self.sections()[-1]
        return last[2] + last[3]


def local_units(values: dict[Key, Any]) -> dict[int, int]:
    """Layer -> length of the per-unit vector this rank measured at this step (`aggregate`d values)."""
    return {i: int(np.size(v)) for (i, code), v in values.items() if code == UNIT}


def agreed_units(layout: Layout, gathered: np.ndarray) -> dict[int, int] | None:
    """The unit counts a new layout needs, from the ranks' headers; None when `layout` fits them all.

    Every rank calls this on the same gathered matrix, so all decide alike (no deadlock, no exchange).

    Raises:
        ProbeError: a layer with different unit counts on different ranks (on every rank alike).
    """
    counts = gathered[:, UNITS_AT:layout.header()]
    changed = {}
    for i in range(counts.shape[1]):
        seen = sorted({int(n) for n in counts[:, i] if n > 0})
        if len(seen) > 1:
            per_rank = ", ".join(f"rank {r}: {int(n)}" for r, n in enumerate(counts[:, i]) if n > 0)
            raise ProbeError(
                f"layer {layout.plan[i].name!r} has a different number of units on different ranks ({per_rank}) "
                f"at step {int(gathered[0, 0])}; graddoctor combines dead units unit by unit and needs the same "
                f"number everywhere. Give every rank the same input shapes, or leave this layer out of watch() "
                f"with exclude=[{layout.plan[i].name!r}]."
            )
        if seen and layout.units.get(i) != seen[0]:
            changed[i] = seen[0]
    return {**layout.units, **changed} if changed else None


def pack(
    layout: Layout,
    step: int,
    keys: list[Key],
    host: list[np.ndarray],
    numel: dict[int, list[int]],
    nonfinite: dict[int, float],
    replicated_here: list[bool],
    *,
    no_forward: bool = False,
) -> np.ndarray:
    """This rank's partials as a flat vector. `replicated_here[i]`: layer i's parameters are
    replicated (DDP) and this rank is not rank 0, so it contributes nothing to their sums."""
    values = aggregate(keys, host)
    units = local_units(values)
    vec = np.zeros(layout.size())
    vec[:UNITS_AT] = (step, no_forward)
    for i, n in units.items():
        vec[UNITS_AT + i] = n
    for i, name, off, length in layout.sections():
        part = vec[off:off + length]
        if name == "p" and not replicated_here[i]:
            un = values.get((i, UN))
            wn = values.get((i, WN))
            ue = values.get((i, UE))
            part[:] = (values.get((i, GN), 0.0), wn or 0.0, un is not None, un or 0.0, nonfinite.get(i, 0.0), wn is not None,
                       ue is not None, ue or 0.0)
        elif name == "a":
            _pack_output(part, i, values, numel.get(i, []))
        elif name == "u" and units.get(i) == layout.units[i]:  # a misfit is re-laid out (agreed_units)
            part[0], part[1:] = 1.0, values[(i, UNIT)]
        elif name in ("ha", "hg") and not (name == "hg" and replicated_here[i]):
            hist = values.get((i, HIST_ACT if name == "ha" else HIST_GRAD))
            if hist is not None:
                part[0], part[1:] = 1.0, hist
    return vec


def _pack_output(part: np.ndarray, i: int, values: dict[Key, Any], calls: list[int]) -> None:
    n = sum(calls)
    if n:
        mean, var = moments(calls, values[(i, S)], values[(i, SD)], values[(i, SS)])
        part[:5] = (n, mean, var * n, values.get((i, NZ), 0.0), values.get((i, SAT), 0.0))
    if (i, OG) in values:
        part[5:7] = (1.0, values[(i, OG)])


@dataclasses.dataclass
class Combined:
    """The ranks' partials combined, in the form `probes.rows` takes from one process."""

    keys: list[Key]
    values: list[Any]
    numel: dict[int, list[int]]
    fired: list[int]
    nonfinite: dict[int, float]


def combine(layout: Layout, gathered: np.ndarray, fired0: list[int]) -> Combined:
    """Combine a (world, size) matrix of packed vectors; `fired0` is rank 0's forward order."""
    world = gathered.shape[0]
    out = Combined([], [], {}, [], {})

    def add(i: int, code: str, value: Any) -> None:
        out.keys.append((i, code))
        out.values.append(value)

    for i, name, off, length in layout.sections():
        block = gathered[:, off:off + length]
        layer = layout.plan[i]
        if name == "p":
            total = block.sum(axis=0)
            add(i, SQUARES_OF[GN], total[0])  # sums of squares over shards, under the codes that add into GN, WN, UN
            if total[5] > 0:  # weights are read on full-tier steps only
                add(i, SQUARES_OF[WN], total[1])
            if total[2] > 0:
                add(i, SQUARES_OF[UN], total[3])
            if total[6] > 0:  # estimates of shards' sums of squares add up like the exact ones
                add(i, UE, total[7])
            if total[4] > 0:
                out.nonfinite[i] = float(total[4])
        elif name == "a":
            _combine_output(i, layer, block, world, add, out)
        elif name == "u" and block[:, 0].any():
            add(i, UNIT, np.maximum.reduce(block[block[:, 0] > 0, 1:], axis=0))  # NaN stays NaN: not dead
        elif name in ("ha", "hg") and block[:, 0].any():
            add(i, HIST_ACT if name == "ha" else HIST_GRAD, sum_histograms(list(block[block[:, 0] > 0, 1:])))
    fired = [i for i in fired0 if i in out.numel]
    out.fired = fired + sorted(i for i in out.numel if i not in fired)
    return out


def _combine_output(i: int, layer: LayerPlan, block: np.ndarray, world: int, add: Any, out: Combined) -> None:
    ranks = [r for r in range(block.shape[0]) if block[r, 0] > 0]
    for r in ranks:  # each rank is one "call" of derive.moments: k = its mean, sum(d) = 0, sum(d^2) = M2
        add(i, S, block[r, 1])
        add(i, SD, 0.0)
        add(i, SS, block[r, 2])
    if ranks:
        out.numel[i] = [int(block[r, 0]) for r in ranks]
        if layer.counts_zeros:
            add(i, NZ, block[:, 3].sum())
            if layer.saturation is not None:
                add(i, SAT, block[:, 4].sum())
    if block[:, 5].any():
        # DDP and FSDP2 average gradients over ranks: the loss the optimizer sees is the mean of the
        # ranks' losses, so each rank's dL/dy is `world` times the one of that mean.
        add(i, OG, block[:, 6].sum() / world**2)


def sum_histograms(hists: list[np.ndarray]) -> np.ndarray:
    """Sum histograms [lo, hi, nonfinite, counts...] taken over different ranges.

    The result spans the union range with the same number of bins. lo, hi, the nonfinite count and
    the total are exact; each input's counts are spread onto the new bins assuming values uniform
    within a bin (exact when all inputs share one range, e.g. replicated gradients).
    """
    if len(hists) == 1:
        return hists[0]
    bins = len(hists[0]) - 3
    nonfinite = sum(h[2] for h in hists)
    filled = [h for h in hists if h[3:].sum() > 0]
    if not filled:
        out = hists[0].copy()
        out[2] = nonfinite
        return out
    lo, hi = min(h[0] for h in filled), max(h[1] for h in filled)
    counts = np.zeros(bins)
    width = hi - lo if hi > lo else 1.0
    edges = lo + width * np.arange(bins + 1) / bins
    edges[-1] = max(hi, edges[-1])
    for h in filled:
        if h[1] > h[0]:
            own = np.linspace(h[0], h[1], bins + 1)
            cdf = np.concatenate([[0.0], np.cumsum(h[3:])])
            counts += np.diff(np.interp(edges, own, cdf))
        else:  # every value equal to h[0]: one point mass
            counts[min(int((h[0] - lo) / width * bins), bins - 1)] += h[3:].sum()
    return np.concatenate([[lo, hi, nonfinite], counts])
