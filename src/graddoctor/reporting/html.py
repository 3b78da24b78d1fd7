"""HtmlPage: one self-contained HTML file (CSS inline, figures as data: URIs, no script, no network).

Everything passed as text is HTML-escaped here, in one place: layer names, run names, config
values and logged keys are user-controlled, and a layer called `<img src=x onerror=alert(1)>`
must show as text. The page holds no JavaScript at all, and its Content-Security-Policy forbids
scripts and every request except data: URIs, so even a missed escape could not run or fetch.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from .._text import fmt
from ..errors import ArgumentTypeError, ConfigError

# Blocks scripts (inline or not) and any fetch: images only from data: URIs, styles only inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;
color:#1d232a;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.3em;border-bottom:1px solid #d5dbe1;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1.1em}.subtitle{color:#5a6570;margin:0 0 1em}nav{font-size:.9em;margin:.5em 0 1em}
nav a{margin-right:1em;color:#2460a7;text-decoration:none}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0;display:block;overflow-x:auto}
th,td{padding:.25em .6em;border-bottom:1px solid #e3e7eb;text-align:right;white-space:nowrap}
th{background:#f3f5f7;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
td.text,th.text{text-align:left;white-space:normal}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eef0f2}
figcaption{color:#5a6570;font-size:.9em}pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.85em}
.note{color:#7a5b00;background:#fff8e1;padding:.3em .6em;border-left:3px solid #f0c000}
.finding{border-left:4px solid #999;padding:.3em .8em;margin:.8em 0;background:#fafbfc}
.finding.error{border-color:#c62828}.finding.warning{border-color:#ef8f00}.finding.info{border-color:#2460a7}
.sev{font-weight:600;text-transform:uppercase;font-size:.85em}.sev.error{color:#c62828}.sev.warning{color:#b86e00}
.sev.info{color:#2460a7}
"""


def escape(value: Any) -> str:
    """`value` as HTML text: str() of it with &, <, >, " and ' escaped."""
    return html.escape(str(value), quote=True)


class HtmlPage:
    """A report page built in reading order, written as one file with no external request.

    Example:
        >>> page = HtmlPage(title="Deep sigmoid MLP")
        >>> with page.section("Findings", anchor="findings"):
        ...     page.paragraph("2 findings")
        ...     page.table(["layer", "grad_norm"], [["0", 1.5e-6]])
        >>> "<h2>Findings</h2>" in page.render()
        True

    Every `text`, heading, caption and table cell is escaped; `page.raw(...)` is the one way to
    add markup, for this package's own templates only (never user text).
    """

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = str(title)
        self.subtitle = str(subtitle)
        self._parts: list[str] = []
        self._toc: list[tuple[str, str]] = []
        self._anchors: set[str] = set()
        self._depth = 0
        self.n_figures = 0

    # -- structure -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def section(self, title: str, anchor: str | None = None) -> Iterator["HtmlPage"]:
        """`<section id=anchor><h2>title</h2>...</section>`; nested sections get `<h3>`."""
        anchor = self._unique_anchor(anchor or title)
        level = 2 if self._depth == 0 else 3
        if level == 2:
            self._toc.append((anchor, str(title)))
        self._parts.append(f'<section id="{anchor}"><h{level}>{escape(title)}</h{level}>')
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            self._parts.append("</section>")

    def _unique_anchor(self, wanted: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", str(wanted)).strip("-").lower() or "section"
        anchor, k = base, 2
        while anchor in self._anchors:
            anchor, k = f"{base}-{k}", k + 1
        self._anchors.add(anchor)
        return anchor

    # -- content ---------------------------------------------------------------------------------

    def heading(self, text: str) -> None:
        """A small heading (`<h3>`) inside a section."""
        self._parts.append(f"<h3>{escape(text)}</h3>")

    def paragraph(self, text: str, *, css_class: str | None = None) -> None:
        """A paragraph of plain text (escaped; newlines kept as line breaks)."""
        cls = f' class="{escape(css_class)}"' if css_class else ""
        self._parts.append(f"<p{cls}>{escape(text).replace(chr(10), '<br>')}</p>")

    def note(self, text: str) -> None:
        """A highlighted remark, e.g. "not recorded": a missing section is said, never silently skipped."""
        self.paragraph(text, css_class="note")

    def bullets(self, items: Sequence[str]) -> None:
        """An unordered list of plain-text items."""
        self._parts.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>")

    def preformatted(self, text: str) -> None:
        """Monospaced text, e.g. a configuration as JSON."""
        self._parts.append(f"<pre>{escape(text)}</pre>")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, text_columns: Sequence[int] = ()) -> None:
        """A table; numbers are formatted like the terminal tables (3 significant digits, nan/inf spelled out).

        Args:
            headers: column titles.
            rows: cells; str kept as is, numbers through `fmt`, None as '-'. All escaped.
            text_columns: columns (by index) of long text, left-aligned and wrapped.
        """
        wide = set(text_columns)
        for k, row in enumerate(rows):
            if len(row) != len(headers):
                raise ConfigError(f"table row {k} has {len(row)} cells, but there are {len(headers)} headers: "
                                 f"give one cell per column ({list(headers)}).")
        head = "".join(f'<th class="text">{escape(h)}</th>' if j in wide else f"<th>{escape(h)}</th>"
                       for j, h in enumerate(headers))
        body = "".join(
            "<tr>" + "".join(
                f'<td class="text">{escape(fmt(c))}</td>' if j in wide else f"<td>{escape(fmt(c))}</td>"
                for j, c in enumerate(row)
            ) + "</tr>"
            for row in rows
        )
        self._parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig: Any, caption: str = "", *, fmt: str | None = None, dpi: int = 100) -> None:
        """Inline a matplotlib Figure (or the Figure of an Axes) as an image, then close it.

        Args:
            fig: a `matplotlib.figure.Figure`, or an Axes (its figure is used).
            caption: plain text under the figure.
            fmt: "svg" or "png"; default: PNG when the figure holds a raster (heatmap, image) or
                more than 20,000 drawn points (SVG would be large and slow to open), else SVG.
            dpi: resolution of PNG output.
        """
        if not hasattr(fig, "savefig"):
            fig = getattr(fig, "figure", fig)  # an Axes
        if not hasattr(fig, "savefig"):
            raise ArgumentTypeError(f"page.figure() takes a matplotlib Figure or Axes, got {type(fig).__name__}: "
                            "pass the Figure that holds your plot (e.g. ax.figure).")
        chosen = fmt or choose_format(fig)
        if chosen not in ("svg", "png"):
            raise ConfigError(f"fmt must be 'svg' or 'png', got {fmt!r}.")
        buf = io.BytesIO()
        metadata = {"Date": None} if chosen == "svg" else {"Software": None}
        import matplotlib  # already imported: `fig` is a matplotlib Figure

        # Text as <text> elements rather than glyph outlines: about 40% smaller SVG.
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "graddoctor"}):
            fig.savefig(buf, format=chosen, dpi=dpi, bbox_inches="tight", metadata=metadata)
        _close(fig)
        mime = "image/svg+xml" if chosen == "svg" else "image/png"
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        alt = escape(caption or f"figure {self.n_figures + 1}")
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self.n_figures += 1
        self._parts.append(f'<figure><img alt="{alt}" src="data:{mime};base64,{data}">{cap}</figure>')

    def raw(self, markup: str) -> None:
        """Append trusted markup as is. Only for graddoctor's own templates: never pass user text."""
        self._parts.append(markup)

    # -- output ----------------------------------------------------------------------------------

    def render(self) -> str:
        """The whole document as a string."""
        nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in self._toc)
        sub = f'<p class="subtitle">{escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(self.title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{escape(self.title)}</h1>{sub}{'<nav>' + nav + '</nav>' if len(self._toc) > 1 else ''}"
            f"</header><main>{''.join(self._parts)}</main></body></html>\n"
        )

    def body(self) -> str:
        """The sections alone, without the document around them (a notebook cell shows this)."""
        return "".join(self._parts)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page (UTF-8), creating parent folders; returns the Path written."""
        from .._outputs import check_output, write_atomic

        out = check_output(path, make_parents=True)
        text = self.render()  # rendered before the file is opened: a failure leaves an old page intact
        with write_atomic(out) as f:
            f.write(text)
        return out


def choose_format(fig: Any, max_points: int = 20_000) -> str:
    """'png' for rasters (imshow, pcolormesh) or many drawn points, else 'svg' (sharp and small)."""
    from matplotlib.collections import QuadMesh  # `fig` is a matplotlib Figure: already imported

    points = 0
    for ax in fig.axes:
        if ax.images or any(isinstance(c, QuadMesh) for c in ax.collections):
            return "png"
        points += sum(len(line.get_xdata()) for line in ax.lines)
        points += sum(len(getattr(c, "get_offsets", lambda: ())()) for c in ax.collections)
    return "png" if points > max_points else "svg"


def _close(fig: Any) -> None:
    # Figures made with matplotlib.figure.Figure (as graddoctor's are) hold no global state; a
    # pyplot figure is registered in pyplot's list and must be closed there to free it.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
