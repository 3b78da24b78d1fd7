"""graddoctor: find out why a deep network's gradients vanish or explode, and what to do about it.

    with graddoctor.watch(model, optimizer, store="runs.db") as run:
        ...  # your training loop, unchanged
    r = graddoctor.load("runs.db")

Importing graddoctor imports torch, numpy and graddoctor's own code only.
"""

from ._version import __version__
from .config import Stat, WatchConfig
from .errors import ConfigError, GradDoctorError, ProbeError, StoreError
from .probes.monitor import Run
from .store import RunStore, RunView, load
from .theory import Prediction, predict
from .probes._watch import watch
from .diagnosis import Diagnosis, Finding, Thresholds, diagnose
from .diagnosis._check import check
from .remedies.compare import Comparison, compare

__all__ = [
    "watch", "load", "predict", "Prediction", "Run", "RunView", "RunStore", "Stat", "WatchConfig",
    "GradDoctorError", "ConfigError", "ProbeError", "StoreError", "__version__",
    "diagnose", "check", "Diagnosis", "Finding", "Thresholds",
    "compare", "Comparison",
]
