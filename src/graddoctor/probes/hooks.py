"""HandleGroup: every hook graddoctor registers, removed together (even when something fails)."""

from __future__ import annotations

from typing import Any

from torch.utils.hooks import RemovableHandle


class HandleGroup:
    """A list of `RemovableHandle`s that is itself a context manager (torch/utils/hooks.py style)."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def add(self, handle: RemovableHandle) -> None:
        self._handles.append(handle)

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> "HandleGroup":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
