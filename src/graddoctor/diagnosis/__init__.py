"""Diagnosis: rules over a recorded run that name problems with evidence, causes and ranked remedies.

Reads runs through `store.view` only (numpy, no torch needed); never imports probes.
"""

from .engine import diagnose
from .findings import Advice, Diagnosis, Finding, Kind, Severity
from .rules import RULES, RuleSpec
from .thresholds import Thresholds

__all__ = ["diagnose", "Diagnosis", "Finding", "Advice", "Kind", "Severity", "Thresholds", "RULES", "RuleSpec"]
