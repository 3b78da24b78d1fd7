"""Small matplotlib helpers shared by the paper studies (matplotlib imported inside, never at import).

The curves here are at-initialization measurements (arrays, not recorded runs), so they are drawn
directly; graddoctor.report.figures draws recorded runs.
"""

from __future__ import annotations

from typing import Any, Sequence

COMPARISON_HEADERS = ["quantity", "paper", "graddoctor.theory", "measured", "where they differ"]


def axes(width: float = 6.0, height: float = 3.6, ncols: int = 1) -> tuple[Any, Any]:
    """(figure, axes) on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, ax[0] if ncols > 1 else ax[0][0]


def lines(ax: Any, xs: Sequence[float], series: dict[str, Sequence[float]], *, xlabel: str, ylabel: str,
          logy: bool = False, errors: dict[str, Sequence[float]] | None = None, style: str = "o-") -> Any:
    """One curve per entry of `series` (label: values), with optional error bars; returns `ax`."""
    for label, ys in series.items():
        err = (errors or {}).get(label)
        if err is not None:
            ax.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=label)
        else:
            ax.plot(xs, ys, style, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def comparison_text(rows: Sequence[Sequence[Any]]) -> str:
    """The paper-vs-measured rows as a plain-text table (for the terminal)."""
    from ..._text import fmt, format_table

    return format_table(COMPARISON_HEADERS, [[fmt(c) for c in row] for row in rows],
                        right=[False] * len(COMPARISON_HEADERS))
