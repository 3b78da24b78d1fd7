"""A sweep's results as a study's analysis reads them: one `Record` per run, selected by tags."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from ..train.spec import RunSpec


@dataclasses.dataclass(frozen=True)
class Record:
    """One finished run: its spec, its metrics (graddoctor.train.trainer.train_run) and where it is stored."""

    spec: RunSpec
    metrics: dict[str, Any]
    store: str
    cache: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)  # shared by a Results

    def view(self) -> Any:
        """The recorded run (`graddoctor.store.RunView`): per-layer statistics by step (read from the store once)."""
        from ..store.view import load

        if self.spec.name not in self.cache:
            self.cache[self.spec.name] = load(self.store, name=self.spec.name)
        return self.cache[self.spec.name]

    def metric(self, key: str) -> float:
        value = self.metrics.get(key)
        return math.nan if value is None else float(value)


@dataclasses.dataclass(frozen=True)
class Results:
    """Every run of a study's sweep, in the order the study listed them."""

    store: str
    records: tuple[Record, ...]

    def select(self, **tags: Any) -> list[Record]:
        """The runs whose tags hold all of `tags` (e.g. select(claim="C2", variant="deep")), by seed."""
        found = [r for r in self.records if all(r.spec.tag(k) == v for k, v in tags.items())]
        return sorted(found, key=lambda r: r.spec.seed)

    def metric(self, key: str, **tags: Any) -> np.ndarray:
        """One metric over the selected runs (one value per seed; NaN where missing)."""
        return np.array([r.metric(key) for r in self.select(**tags)], dtype=float)


def mean_spread(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """{"mean", "std" (sample, ddof=1), "min", "max", "n", "values"} of the finite values (NaN/None kept in "values")."""
    arr = np.asarray(values, dtype=float)
    ok = arr[np.isfinite(arr)]
    out: dict[str, Any] = {"n": int(len(arr)), "values": [None if not math.isfinite(v) else float(v) for v in arr]}
    if len(ok):
        out |= {"mean": float(ok.mean()), "std": float(ok.std(ddof=1)) if len(ok) > 1 else 0.0,
                "min": float(ok.min()), "max": float(ok.max())}
    else:
        out |= {"mean": None, "std": None, "min": None, "max": None}
    return out


def fmt_spread(s: dict[str, Any], digits: int = 3) -> str:
    """'0.912 ± 0.011' (or '1.2e-05 ± 3e-06' for small or large values; 'n/a' when nothing is finite)."""
    mean, std = s.get("mean"), s.get("std")
    if mean is None:
        return "n/a"
    small = mean != 0 and (abs(mean) < 10 ** -(digits - 1) or abs(mean) >= 1e4)
    f = (lambda v: f"{v:.{digits - 1}e}") if small else (lambda v: f"{v:.{digits}f}")
    return f"{f(mean)} ± {f(std or 0.0)}"
