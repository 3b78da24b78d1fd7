"""TensorBoard: write a recorded run as TensorBoard event files, after training or while it runs.

Reads only `RunView`s (never probes or tensors of the model). TensorBoard itself is imported
inside the functions that write, so importing this module costs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GradDoctorError
from ..store.view import RunView

ROOT_TAG = "model"  # the root module's layer name is "", which TensorBoard cannot show as a tag
HIST_KINDS = ("act", "grad")


def export_tensorboard(view: RunView, logdir: str | os.PathLike[str]) -> dict[str, int]:
    """Write every recorded value of `view` into TensorBoard event files under `logdir`.

    Tags: `<stat>/<layer>` for per-layer statistics (`grad_norm/encoder.fc1`), the `run.log`
    key itself for scalars (`loss`, `lr/group0`, `amp_scale`), and `act_hist/<layer>` /
    `grad_hist/<layer>` for histograms. The TensorBoard step is graddoctor's step (the
    optimizer step); wall times are the recorded ones. Non-finite values are written as they
    are, never dropped; a value that was not recorded at a step is not written at all.

    Example:
        >>> export_tensorboard(graddoctor.load("runs.db"), "tb/exp1")     # doctest: +SKIP
        >>> # tensorboard --logdir tb

    Returns:
        How many scalar and histogram events were written: {"scalars": n, "histograms": m}.
    """
    writer = summary_writer(logdir, inputs=[view.path])
    try:
        counts = {"scalars": 0, "histograms": 0}
        for tag, step, wall_time, value in scalar_events(view):
            writer.add_scalar(tag, value, global_step=step, walltime=wall_time)
            counts["scalars"] += 1
        for tag, step, wall_time, hist in histogram_events(view):
            writer.add_histogram_raw(tag, global_step=step, walltime=wall_time, **hist)
            counts["histograms"] += 1
    finally:
        writer.close()
    return counts


class TensorBoardMirror:
    """Mirror a run into TensorBoard while it trains: each `update()` writes the steps recorded since the last.

    The source is a live run (`graddoctor.watch(...)`, a callback's `.run`) or a store path that
    another process is writing (the store is readable while training runs). While the run is
    running, its newest recorded step is held back: scalars logged after a step (`run.log` after
    `optimizer.step()`) reach the store with the next recorded step. `close()` writes the rest.

    Example:
        >>> mirror = TensorBoardMirror("runs.db", "tb/exp1", name="exp1")         # doctest: +SKIP
        >>> mirror.update()   # call now and then (each call reads the run back); close() at the end

    Cost: each update reads the whole run back from the store, so call it every few seconds or
    every few hundred steps, not every step.
    """

    def __init__(self, source: Any, logdir: str | os.PathLike[str], *, name: str | None = None) -> None:
        self.source, self.name = source, name
        self.written = -1  # the last step written
        self.running = True  # the run's status at the last update
        self._writer = summary_writer(logdir, inputs=[source] if isinstance(source, (str, os.PathLike)) else
                                      [getattr(source, "path", None)])

    def update(self, *, final: bool = False) -> int:
        """Write the recorded steps after the last one written; returns how many steps were written."""
        from ..store.view import load

        view = load(self.source, name=self.name)
        self.running = view.status == "running"
        done = final or not self.running
        steps = {int(s) for s in view.steps if int(s) > self.written}
        if not done and steps:
            steps.discard(int(view.steps[-1]))  # its late scalars may still come
        for tag, step, wall_time, value in scalar_events(view, steps):
            self._writer.add_scalar(tag, value, global_step=step, walltime=wall_time)
        for tag, step, wall_time, hist in histogram_events(view, steps):
            self._writer.add_histogram_raw(tag, global_step=step, walltime=wall_time, **hist)
        self._writer.flush()
        if steps:
            self.written = max(steps)
        return len(steps)

    def close(self) -> None:
        """Write what is left and close the event file."""
        try:
            self.update(final=True)
        finally:
            self._writer.close()


def summary_writer(logdir: str | os.PathLike[str], *, inputs: list[Any] = ()) -> Any:
    """torch's `SummaryWriter` (it needs the `tensorboard` package), with a clear error without it.

    `logdir` must be a folder (created if missing) that is none of the `inputs` (the store read).
    """
    from .._outputs import OutputError, check_output, make_folder

    check_output(logdir, inputs=inputs, folder=True, what="TensorBoard log folder", make_parents=True)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise GradDoctorError(
            "writing TensorBoard files needs the tensorboard package: pip install 'graddoctor[tensorboard]'."
        ) from None
    make_folder(Path(logdir), what="TensorBoard log folder")
    try:
        return SummaryWriter(log_dir=os.fspath(logdir))
    except OSError as err:
        raise OutputError(f"cannot write TensorBoard files into {os.fspath(logdir)!r}: {err.strerror or err}.") from None


def layer_tag(stat: str, layer: str) -> str:
    return f"{stat}/{layer or ROOT_TAG}"


def scalar_events(view: RunView, steps: set[int] | None = None) -> list[tuple[str, int, float, float]]:
    """(tag, step, wall_time, value) of every recorded statistic and logged scalar (of `steps` only)."""
    cols = [j for j, s in enumerate(view.steps) if steps is None or int(s) in steps]
    events = []
    for stat in view.stats:
        matrix, recorded = view.stat_matrix(stat), view.recorded(stat)
        for i, layer in enumerate(view.layers):
            tag = layer_tag(stat, layer)
            events += [(tag, int(view.steps[j]), float(view.wall_time[j]), float(matrix[i, j])) for j in cols if recorded[i, j]]
    for key in view.scalars:
        values, recorded = view.scalar(key), view.scalar_recorded(key)
        events += [(key, int(view.steps[j]), float(view.wall_time[j]), float(values[j])) for j in cols if recorded[j]]
    return events


def histogram_events(view: RunView, steps: set[int] | None = None) -> list[tuple[str, int, float, dict[str, Any]]]:
    """(tag, step, wall_time, add_histogram_raw arguments) of every recorded histogram (of `steps` only)."""
    wall = {int(s): float(t) for s, t in zip(view.steps, view.wall_time)}
    events = []
    for layer in view.layers:
        for kind in HIST_KINDS:
            for step, lo, hi, _nonfinite, counts in view.hist(layer, kind):
                if (steps is None or step in steps) and counts.sum() > 0:
                    events.append((layer_tag(f"{kind}_hist", layer), step, wall.get(step, 0.0), raw_histogram(lo, hi, counts)))
    return events


def raw_histogram(lo: float, hi: float, counts: np.ndarray) -> dict[str, Any]:
    """`add_histogram_raw` arguments for graddoctor's equal-width bins over [lo, hi].

    The store keeps bin counts, not the values, so `sum` and `sum_squares` are computed from the
    bin centres (TensorBoard draws histograms from the limits and counts alone). NaN/Inf values
    are counted apart in the store and are not part of a TensorBoard histogram.
    """
    edges = np.linspace(lo, hi, len(counts) + 1) if hi > lo else np.full(len(counts) + 1, lo)
    centres = (edges[:-1] + edges[1:]) / 2
    return {
        "min": float(lo), "max": float(hi), "num": int(counts.sum()),
        "sum": float((centres * counts).sum()), "sum_squares": float((centres**2 * counts).sum()),
        "bucket_limits": [float(e) for e in edges[1:]], "bucket_counts": [float(c) for c in counts],
    }
