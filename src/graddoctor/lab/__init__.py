"""The lab: reproducible studies that measure the claims about vanishing gradients (studies and claims only:
the run specs and the trainer they use are graddoctor.train, the datasets graddoctor.data).

    from graddoctor import lab
    run = lab.run_study("seed-claims", quick=True)   # trains, analyses, writes DIR/results.json and report.html
    print(run)                                        # the verdict table
    lab.get_study("seed-claims")                      # a Study (graddoctor.lab.registry.studies(): all of them)

The names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "run_study": "runner", "StudyRun": "runner", "Study": "study", "Settings": "study", "get_study": "registry",
    "grid": "sweep", "run_sweep": "sweep", "Results": "results",
    "mean_spread": "results", "load_toml": "toml_study",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
