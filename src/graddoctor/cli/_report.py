"""`graddoctor report`: registered by cli._main; imports matplotlib only when the verb runs."""

from __future__ import annotations

import argparse
import sys


def add_report_verb(sub: argparse._SubParsersAction) -> None:
    """Register `graddoctor report PATH [--name N ...] -o report.html` (issue 6)."""
    rep = sub.add_parser("report", help="write a self-contained HTML report of a run (several --name: a comparison)")
    rep.add_argument("path", help="run store (SQLite file written by graddoctor.watch)")
    rep.add_argument("--name", action="append", dest="names", metavar="NAME",
                     help="run name (default: the latest run); repeat to compare runs on one page")
    rep.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    rep.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..reporting.terminal import progress
    from ..reporting.write import write_report

    path = write_report(args.path, args.output, names=args.names, progress=progress)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1e6:.2f} MB)", file=sys.stderr)
    return 0
