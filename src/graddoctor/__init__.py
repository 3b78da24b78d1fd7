"""graddoctor: find out why a deep network's gradients vanish or explode, and what to do about it.

    with graddoctor.watch(model, optimizer, store="runs.db") as run:
        ...  # your training loop, unchanged
    r = graddoctor.load("runs.db")

Importing graddoctor imports torch, numpy and graddoctor's own code only. The rest of the API is
importable from its subpackage (graddoctor.store.RunStore, graddoctor.config.WatchConfig,
graddoctor.errors.ConfigError, graddoctor.theory, graddoctor.data, ...: docs/layout.md).
"""

import sys

from ._version import __version__
from .errors import GradDoctorError
from .store import load
from .theory import predict
from .probes._watch import watch
from .diagnosis import Diagnosis, Finding, diagnose
from .diagnosis._check import check
from .remedies.compare import compare
from .reporting.write import write_report as report

__all__ = [
    "watch", "load", "diagnose", "check", "predict", "compare", "report", "Diagnosis", "Finding", "GradDoctorError",
    "__version__",
]

if "IPython" in sys.modules:  # in a notebook: runs, diagnoses and comparisons display as HTML
    from .reporting.notebook import register as _register_display

    _register_display()
