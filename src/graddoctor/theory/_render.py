"""Plain-text rendering of a Prediction (its repr and the CLI's output). Computes nothing."""

from __future__ import annotations

import math
from typing import Any

_PHASE_WORDS = {
    "ordered": "ordered: gradients shrink toward the input",
    "critical": "critical: gradients keep their size",
    "chaotic": "chaotic: gradients grow toward the input",
}


def num(x: float | None, digits: int = 3) -> str:
    """A short number: '-' for None, 'inf', fixed or scientific notation by size."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(header), "  ".join("-" * w for w in widths), *[fmt(r) for r in rows]]


def _summary_lines(s: Any) -> list[str]:
    if s.bn_growth is not None:  # the fixed point of plain chains says nothing about BatchNorm chains
        return [f"typical block: Linear-BatchNorm-{s.activation}, sigma_w^2 = {num(s.sigma_w2)}",
                f"  BatchNorm: ||dL/dh||^2 grows by {num(s.bn_growth)} per block toward the input, whatever the "
                "init (Yang et al. 2019); no sigma_w^2 makes it critical"]
    d = s.scales
    lines = [
        f"typical block: {s.activation}, sigma_w^2 = {num(s.sigma_w2)}, sigma_b^2 = {num(s.sigma_b2)}",
        f"  fixed point q* = {num(d.q_star)} ({d.fixed_point_kind}), chi_1 = {num(d.chi1)}: {_PHASE_WORDS[d.phase]}",
        f"  depth scales: xi_q = {num(d.xi_q)}, xi_c = {num(d.xi_c)}, gradient xi = {num(d.xi_grad)}; "
        f"trainable depth ~ 6 xi_c = {num(d.trainable_depth, 1)}",
    ]
    if s.critical_sigma_w2 is not None:
        lines.append(f"  critical init at sigma_b^2 = {num(s.sigma_b2)}: sigma_w^2 = {num(s.critical_sigma_w2)} "
                     f"(weight std = sqrt({num(s.critical_sigma_w2)} / fan_in))")
    else:
        lines.append("  no sigma_w^2 makes this block critical")
    return lines


def render(p: Any) -> str:
    """The Prediction as text: headline, typical block, per-layer table, uncovered parts, notes."""
    lines = [f"Prediction at initialization: {len(p.layers)} Linear/Conv layers predicted, input second moment "
             f"{num(p.input_q)}, batch {p.batch if p.batch is not None else '-'}"]
    if p.mean_factor is not None:
        first = p.layers[0].rel_out_grad_norm
        lines.append(f"||dL/dh||^2 changes by {num(p.mean_factor)} per layer ({_PHASE_WORDS[p.phase]}); "
                     f"first layer / last: ||dL/dh|| ratio {num(first)}")
    if p.summary is not None:
        lines += _summary_lines(p.summary)
    if p.layers:
        rows = [[lp.name, lp.type, num(lp.sigma_w2), num(lp.sigma_b2), num(lp.q), num(lp.factor), num(lp.rel_out_grad_norm)]
                for lp in p.layers]
        lines += ["", *_table(["layer", "type", "sigma_w2", "sigma_b2", "q", "factor", "rel_out_grad_norm"], rows)]
    if p.uncovered:
        lines += ["", "not covered (nothing is predicted past these):"]
        lines += [f"  {name or '<model>'} ({type_}): {reason}" for name, type_, reason in p.uncovered]
    lines += ["", "notes:", *[f"  - {n}" for n in p.notes]]
    return "\n".join(lines)
