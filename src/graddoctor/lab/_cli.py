"""`graddoctor lab list|run`: registered by cli.py; imports the lab only when the verb runs."""

from __future__ import annotations

import argparse


def add_lab_verb(sub: argparse._SubParsersAction) -> None:
    """Register `graddoctor lab` (issue 7)."""
