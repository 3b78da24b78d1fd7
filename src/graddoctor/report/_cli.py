"""`graddoctor report`: registered by cli.py; imports matplotlib only when the verb runs."""

from __future__ import annotations

import argparse


def add_report_verb(sub: argparse._SubParsersAction) -> None:
    """Register `graddoctor report` (issue 6)."""
