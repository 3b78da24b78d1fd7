"""Terminal output: rich tables with colour when stdout is a terminal, the plain text otherwise.

rich is imported only when output goes to a terminal and rich is installed; piped output is the
plain text of `report.text` and `diagnose.render`, byte for byte.
"""

from __future__ import annotations

import sys
from typing import IO, Any, Iterable, Iterator


def wants_rich(stream: IO[str] | None = None) -> bool:
    """True when `stream` (default stdout) is a terminal and rich can be imported."""
    stream = stream or sys.stdout
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def progress(items: Iterable[Any], total: int, label: str) -> Iterator[Any]:
    """Yield `items`, with a progress bar on stderr when it is a terminal (nothing when piped)."""
    if total < 2 or not wants_rich(sys.stderr):
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)
