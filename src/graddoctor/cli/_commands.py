"""Command lines the CLI prints: a finding's comparable remedies as the `graddoctor compare` command.

Library data carries remedy ids only (Finding.comparable); this is where they become CLI syntax.
"""

from __future__ import annotations

from typing import Callable, Sequence

PLACEHOLDER_MODEL = "MODEL"
PLACEHOLDER_DATA = "--data DATA.npz"


def compare_command(remedy_ids: Sequence[str], model: str = PLACEHOLDER_MODEL, data: str = PLACEHOLDER_DATA) -> str:
    """The `graddoctor compare` command that tries these (comparable) remedies side by side."""
    optimizer = " --optimizer sgd" if "change_optimizer" in remedy_ids else ""
    return f"graddoctor compare {model} {data} --remedies {','.join(remedy_ids)}{optimizer} --seeds 3"


def compare_line(model: str | None = None, data: str | None = None) -> Callable[[Sequence[str]], str]:
    """A renderer of Finding.comparable for diagnosis text: the command with this MODEL spec and data
    filled in (placeholders when unknown: a store does not know the model's code or data)."""
    model = model or PLACEHOLDER_MODEL
    data = f"--data {data}" if data else PLACEHOLDER_DATA
    return lambda ids: compare_command(ids, model, data)
