"""`graddoctor top` and `graddoctor diagnose --follow`: argument parsing for reporting.live."""

from __future__ import annotations

import argparse

from ..errors import ConfigError


def add_top_verb(sub: argparse._SubParsersAction) -> None:
    top = sub.add_parser("top", help="live view of a run being written: per-layer table, loss, findings, guard "
                         "actions (read-only; Ctrl-C quits)")
    top.add_argument("path", help="run store (SQLite file written by graddoctor.watch); it may not exist yet")
    top.add_argument("--name", help="run name (default: the latest run)")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default: 1)")
    top.set_defaults(func=cmd_top)


def add_follow_arguments(diag: argparse.ArgumentParser) -> None:
    diag.add_argument("--follow", action="store_true", help="print each new finding and guard action while the run "
                      "records, then the full diagnosis when it ends")
    diag.add_argument("--interval", type=float, default=1.0, help="with --follow: seconds between reads (default: 1)")


def _interval(args: argparse.Namespace) -> float:
    if not 0.05 <= args.interval <= 3600:
        raise ConfigError(f"--interval must be between 0.05 and 3600 seconds, got {args.interval}.")
    return args.interval


def cmd_top(args: argparse.Namespace) -> int:
    try:
        import rich  # noqa: F401
    except ImportError:
        raise ConfigError("graddoctor top draws with rich: pip install 'graddoctor[report]' (or pip install rich).") from None
    from ..reporting.live import top

    return top(args.path, args.name, interval=_interval(args))


def follow_diagnosis(args: argparse.Namespace):
    """The Diagnosis at the end of `diagnose --follow` (None: Ctrl-C before anything was recorded)."""
    from ..reporting.live import follow

    return follow(args.path, args.name, interval=_interval(args), write=lambda text: print(text, flush=True))
