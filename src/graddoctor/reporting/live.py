"""A live view of a run being written: `graddoctor top` (rich, refreshing) and `diagnose --follow` (plain text).

Read-only: each refresh opens the store read-only (SQLite WAL readers never block the writer),
loads the run and closes it again, so it is safe beside a training that writes the same file.
Ends cleanly on Ctrl-C. rich is imported only here, inside the functions that draw.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from .._text import fmt
from ..errors import GradDoctorError, StoreError
from ..store.view import RunView, load
from .text import LAYER_COLUMNS, SHORT

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 40) -> str:
    """The last `width` finite values as block characters, low to high; '!' marks a non-finite one."""
    tail = values[-width:]
    finite = [v for v in tail if v == v and abs(v) != float("inf")]
    if not finite:
        return "!" * len(tail)
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    return "".join(
        "!" if not (v == v and abs(v) != float("inf")) else SPARK[min(int((v - lo) / span * len(SPARK)), len(SPARK) - 1)]
        for v in tail
    )


def read(path: str, name: str | None) -> RunView | None:
    """The run as it is now, or None while the store or the run does not exist yet."""
    if not os.path.exists(path):
        return None
    try:
        return load(path, name=name)
    except StoreError:
        return None


def frame(run: RunView | None, path: str, diagnosis: Any = None, *, max_actions: int = 8) -> Any:
    """One screen of `graddoctor top`: run header, loss, the latest per-layer table, findings, guard actions."""
    from rich.console import Group
    from rich.text import Text

    from .terminal import _cell, _number_style, _table

    if run is None:
        return Text(f"waiting for a run in {path!r} ... (Ctrl-C to quit)", style="dim")
    parts: list[Any] = [Text(f"graddoctor top: run {run.name!r} ({run.status}), {len(run.steps)} recorded steps   "
                             f"{time.strftime('%H:%M:%S')}   Ctrl-C to quit", style="bold"), Text(path, style="dim")]
    if len(run.steps) == 0:
        parts.append(Text("no step recorded yet.", style="dim"))
        return Group(*parts)
    if "loss" in run.scalars:
        losses = [float(v) for v in run.scalar("loss")[run.scalar_recorded("loss")]]
        if losses:
            parts.append(Text(f"loss {fmt(losses[-1])}  (min {fmt(min(losses, key=_finite_key))})  {sparkline(losses)}"))
    col = len(run.steps) - 1
    step = int(run.steps[col])
    cols = [c for c in LAYER_COLUMNS if c in run.stats]
    table = _table(f"step {step}, input side first", ["layer", "type", *(SHORT[c] for c in cols)])
    for info in run.layer_info:
        values = run.row(info.name, step)
        table.add_row(Text(info.name or "(root)", style="cyan"), Text(info.type),
                      *(_cell(values.get(c), _number_style(c, values.get(c))) for c in cols))
    parts.append(table)
    parts.append(_findings(diagnosis))
    if run.guard_actions:
        shown = run.guard_actions[-max_actions:]
        lines = [f"step {a.step}: {a.action} [{a.trigger}{f' in {a.layer!r}' if a.layer else ''}] {a.reason}" for a in shown]
        parts.append(Text(f"guard actions ({len(run.guard_actions)}, latest last):\n  " + "\n  ".join(lines)))
    return Group(*parts)


def _finite_key(v: float) -> float:
    return v if v == v else float("inf")


def _findings(diagnosis: Any) -> Any:
    from rich.text import Text

    from .terminal import SEVERITY_STYLE

    if diagnosis is None or not diagnosis.findings:
        return Text("findings so far: none", style="green")
    text = Text("findings so far:\n")
    for f in diagnosis.findings:
        text.append(f"  {str(f.severity).upper():8}", style=SEVERITY_STYLE.get(str(f.severity), "bold"))
        layers = ", ".join(repr(name) for name in f.layers[:4]) + (" ..." if len(f.layers) > 4 else "")
        text.append(f" {f.kind}  {layers}\n")
    return text


def _diagnosis(run: RunView | None) -> Any:
    if run is None or len(run.steps) == 0:
        return None
    from ..diagnosis import diagnose

    try:
        return diagnose(run)
    except GradDoctorError:
        return None


def top(path: str, name: str | None = None, *, interval: float = 1.0, console: Any = None,
        frames: int | None = None) -> int:
    """`graddoctor top PATH`: redraw the run every `interval` seconds until Ctrl-C (or `frames` redraws)."""
    from rich.live import Live

    from .terminal import _console

    console = _console(console)
    seen, diagnosis, n = None, None, 0
    try:
        with Live(frame(None, path), console=console, auto_refresh=False, screen=False) as live:
            while frames is None or n < frames:
                run = read(path, name)
                key = None if run is None else (run.run_id, len(run.steps), run.status, len(run.guard_actions))
                if key != seen:  # diagnose only when something new was written
                    seen, diagnosis = key, _diagnosis(run)
                live.update(frame(run, path, diagnosis), refresh=True)
                n += 1
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    return 0


def follow(path: str, name: str | None = None, *, interval: float = 1.0, write: Callable[[str], Any] = print,
           until_done: bool = True) -> Any:
    """`graddoctor diagnose --follow`: print each new finding and guard action as the run records it.

    Returns the last Diagnosis (None if the run recorded nothing) when the run is no longer running
    (finished, failed or crashed), or on Ctrl-C.
    """
    from ..diagnosis.render import guard_lines, render_finding

    seen_findings: set[tuple[str, tuple[str, ...]]] = set()
    n_actions, last_key, diagnosis = 0, None, None
    try:
        while True:
            run = read(path, name)
            key = None if run is None else (run.run_id, len(run.steps), run.status, len(run.guard_actions))
            if key != last_key and run is not None:
                last_key, diagnosis = key, _diagnosis(run)
                for f in diagnosis.findings if diagnosis is not None else ():
                    if (str(f.kind), tuple(f.layers)) not in seen_findings:
                        seen_findings.add((str(f.kind), tuple(f.layers)))
                        write(f"[step {int(run.steps[-1])}] new finding\n" + "\n".join(render_finding(len(seen_findings), f)))
                if len(run.guard_actions) > n_actions:
                    write("\n".join(guard_lines(run.guard_actions[n_actions:], limit=50)))
                    n_actions = len(run.guard_actions)
                if until_done and run.status != "running":
                    write(f"run {run.name!r} {run.status} after {len(run.steps)} recorded steps.")
                    return diagnosis
            time.sleep(interval)
    except KeyboardInterrupt:
        return diagnosis
