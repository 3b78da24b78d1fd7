"""Rendering of recorded runs: terminal tables, figures and the self-contained HTML report.

    from graddoctor.reporting import HtmlPage, write_report, figures
    write_report("runs.db", "report.html")

Importing this package does not import matplotlib or rich: the figure functions and the
terminal renderer import them when called (the `[report]` extra).
"""

from . import figures
from .html import HtmlPage
from .write import write_report

__all__ = ["HtmlPage", "write_report", "figures"]
