"""graddoctor: find out why a deep network's gradients vanish or explode, and what to do about it.

    with graddoctor.watch(model, optimizer, store="runs.db") as run:
        ...  # your training loop, unchanged
    r = graddoctor.load("runs.db")

Importing graddoctor imports torch, numpy and graddoctor's own code only.
"""

from .config import Stat, WatchConfig
from .errors import ConfigError, GradDoctorError, ProbeError, StoreError
from .probes.monitor import Run
from .store import RunStore, RunView, load
from .theory import Prediction, predict
from .watch import watch
from .diagnose import Diagnosis, Finding, Thresholds, diagnose
from .check import check
from .compare import Comparison, compare

__version__ = "0.1.0"

__all__ = [
    "watch", "load", "predict", "Prediction", "Run", "RunView", "RunStore", "Stat", "WatchConfig",
    "GradDoctorError", "ConfigError", "ProbeError", "StoreError", "__version__",
    "diagnose", "check", "Diagnosis", "Finding", "Thresholds",
    "compare", "Comparison",
]
