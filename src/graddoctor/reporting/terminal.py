"""Terminal output: rich tables with colour when stdout is a terminal, the plain text otherwise.

rich is imported only when output goes to a terminal and rich is installed; piped output is the
plain text of `reporting.text` and `diagnosis.render`, byte for byte. User text (layer and run names)
goes into rich as `Text`, never as markup, so a name like "[red]x" prints as it is.
"""

from __future__ import annotations

import functools
import sys
from typing import IO, Any, Iterable, Iterator

from ..diagnosis.render import SUMMARY_COLUMNS, CompareLine, compare_call, expected_table, guard_lines, layer_list
from .._text import fmt, printable
from ..store.view import RunView
from .text import LAYER_COLUMNS, SHORT

SEVERITY_STYLE = {"error": "bold red", "warning": "bold yellow", "info": "bold blue"}


@functools.lru_cache(maxsize=1)
def _safe_text() -> Any:
    """rich's Text, with control characters of user strings escaped (rich keeps ESC as it is)."""
    from rich.text import Text

    class SafeText(Text):
        def __init__(self, text: str = "", *args: Any, **kwargs: Any) -> None:
            super().__init__(printable(text), *args, **kwargs)

        def append(self, text: Any, style: Any = None) -> Any:
            return super().append(printable(text) if isinstance(text, str) else text, style)

    return SafeText


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


def _console(console: Any) -> Any:
    if console is not None:
        return console
    from rich.console import Console

    return Console()


def _table(title: str, headers: list[str], *, left: tuple[int, ...] = (0, 1)) -> Any:
    from rich.table import Table
    Text = _safe_text()

    table = Table(title=Text(title), title_justify="left", header_style="bold", box=None, pad_edge=False)
    for k, header in enumerate(headers):
        table.add_column(Text(header), justify="left" if k in left else "right", no_wrap=k < 2)
    return table


def _cell(value: Any, style: str = "") -> Any:
    Text = _safe_text()

    return Text(fmt(value), style=style)


def _number_style(key: str, value: Any) -> str:
    """Colour what a reader should look at: NaN/Inf, mostly dead or saturated units."""
    if value is None or isinstance(value, str):
        return "dim" if value is None else ""
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        return "bold red"
    if key.startswith(("dead", "saturated", "sat")) and number >= 0.5:
        return "yellow"
    if key == "nonfinite_steps" and number > 0:
        return "red"
    return ""


def print_layer_table(run: RunView, step: int | None = None, *, console: Any = None) -> None:
    """`graddoctor show` on a terminal: the per-layer table of `reporting.text.layer_table`, in colour."""
    Text = _safe_text()

    console = _console(console)
    if len(run.steps) == 0:
        console.print(Text(f"run {run.name!r} ({run.status}): no step recorded yet."))
        return
    col = run.step_index(step)
    cols = [c for c in LAYER_COLUMNS if c in run.stats]
    title = (f"run {run.name!r} ({run.status}), step {int(run.steps[col])}, {len(run.layer_info)} layers, "
             "input side first")
    table = _table(title, ["layer", "type", *(SHORT[c] for c in cols)])
    for info in run.layer_info:
        values = run.row(info.name, int(run.steps[col]))
        table.add_row(Text(info.name or "(root)", style="cyan"), Text(info.type),
                      *(_cell(values.get(c), _number_style(c, values.get(c))) for c in cols))
    _print_wide(console, table)


def print_diagnosis(d: Any, *, console: Any = None, compare: CompareLine | None = None) -> None:
    """`graddoctor diagnose`/`check` on a terminal: findings with coloured severities, then the tables.

    `compare` writes each finding's comparable remedy ids (default: a graddoctor.compare call)."""
    Text = _safe_text()

    console = _console(console)
    run = d.run
    console.print(Text(f"graddoctor diagnosis of run {run.get('name')!r} ({run.get('status')}): "
                       f"{run.get('n_steps')} recorded steps, {run.get('n_layers')} layers", style="bold"))
    for note in d.notes:
        console.print(Text(f"note: {note}", style="dim"))
    console.print()
    if not d.findings:
        console.print(Text("No finding: gradients, activations and updates look healthy by every rule.", style="green"))
        console.print()
    for k, f in enumerate(d.findings, 1):
        _print_finding(console, k, f, compare or compare_call)
    _print_summary(console, d)
    if d.guard_actions:
        console.print()
        for line in guard_lines(d.guard_actions):
            console.print(Text(line))


def _print_finding(console: Any, k: int, f: Any, compare: CompareLine) -> None:
    Text = _safe_text()

    head = Text(f"{k}. ")
    head.append(str(f.severity).upper(), style=SEVERITY_STYLE.get(str(f.severity), "bold"))
    head.append(f"  {f.kind}", style="bold")
    if f.step_range is not None:
        a, b = f.step_range
        head.append(f"  step {a}" if a == b else f"  steps {a}-{b}")
    console.print(head)
    if f.layers:
        _indented(console, Text(f"layers: {layer_list(f.layers)}"), 3)
    _indented(console, Text("evidence: " + ", ".join(f"{key}={fmt(v)}" for key, v in f.evidence.items()), style="dim"), 3)
    _indented(console, Text(f"cause: {f.cause}"), 3)
    if f.remedies:
        _indented(console, Text("try, in this order:"), 3)
        for rank, advice in enumerate(f.remedies, 1):
            line = Text(f"{rank}. ")
            line.append(advice.title, style="green")
            line.append(f" [{advice.id}]: {advice.why}")
            _indented(console, line, 5)
    if f.comparable:
        _indented(console, Text(f"compare them on your model: {compare(f.comparable)}", style="cyan"), 3)
    console.print()


def _indented(console: Any, text: Any, left: int) -> None:
    from rich.padding import Padding

    console.print(Padding(text, (0, 0, 0, left)))


def _print_wide(console: Any, table: Any) -> None:
    # Never elide a number: a table wider than the terminal is printed at its natural width (the
    # terminal wraps it, as it does the plain text), rather than cut down to "0.…".
    needed = console.measure(table, options=console.options.update(max_width=10_000)).maximum
    width = console.width
    console.width = max(width, needed)  # print(width=...) cannot exceed the console's own width
    try:
        console.print(table)
    finally:
        console.width = width


def _print_summary(console: Any, d: Any) -> None:
    Text = _safe_text()

    title = ("per layer (input side first; out_grad = ||dL/d output||; medians over the first/last finite steps; "
             "nonfinite = steps with NaN/Inf)")
    table = _table(title, ["layer", "type", *(h for _, h in SUMMARY_COLUMNS), "findings"],
                   left=(0, 1, len(SUMMARY_COLUMNS) + 2))
    for layer in d.layers:
        kinds = ",".join(layer.get("findings", ())) or "-"
        table.add_row(Text(layer["name"] or "(root)", style="cyan"), Text(layer["type"]),
                      *(_cell(layer.get(key), _number_style(key, layer.get(key))) for key, _ in SUMMARY_COLUMNS),
                      Text(kinds, style="magenta" if kinds != "-" else "dim"))
    _print_wide(console, table)
    if d.expected is not None:
        console.print()
        console.print(Text("\n".join(expected_table(d.expected))))
