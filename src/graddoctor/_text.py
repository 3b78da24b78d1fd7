"""Plain-text number and table formatting shared by every text output (no colour, safe to pipe).

Lives below reporting/ and diagnosis/ so that both can use it (diagnosis may not import reporting).
"""

from __future__ import annotations

import math
from typing import Any, Sequence


def fmt(value: Any) -> str:
    """A number in about 3 significant digits; '-' when absent; NaN/Inf spelled out (never hidden)."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int)):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return f"{value:.3g}" if 1e-3 <= abs(value) < 1e4 else f"{value:.2e}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[bool] | None = None) -> str:
    """Columns padded to their widest cell; by default the first column left-aligned, the rest right."""
    rows = [[printable(str(c), keep="") for c in row] for row in rows]  # user names: escaped before measuring
    right = right if right is not None else [i > 0 for i in range(len(headers))]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def printable(text: str, *, keep: str = "\n") -> str:
    """`text` with every control character written as an escape (\\x1b, \\u202e), so that a run or layer
    name holding terminal escape sequences or bidirectional overrides prints as visible text.

    C0 and C1 controls, DEL and the bidirectional formatting characters are escaped; `keep` lists
    the controls left as they are (newlines, so that multi-line output stays multi-line).
    """
    if text.isprintable() and not any(ord(c) in _BIDI for c in text):
        return text
    out = []
    for c in text:
        code = ord(c)
        if c in keep or (c.isprintable() and code not in _BIDI) or (c == " "):
            out.append(c)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)
