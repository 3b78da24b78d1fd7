"""HandleGroup: every hook graddoctor registers, removed together (even when something fails)."""

from __future__ import annotations

from typing import Any, Protocol


class Removable(Protocol):
    def remove(self) -> None: ...


class AttributePatch:
    """Set `obj.name = value` on one instance; `remove()` puts back exactly what was there.

    Used only where an object offers no hook (GradScaler.update), never on a module's forward.
    """

    _MISSING = object()

    def __init__(self, obj: Any, name: str, value: Any) -> None:
        self.obj, self.name = obj, name
        self.previous = vars(obj).get(name, self._MISSING)
        setattr(obj, name, value)

    def remove(self) -> None:
        if self.previous is self._MISSING:
            vars(self.obj).pop(self.name, None)
        else:
            setattr(self.obj, self.name, self.previous)


class HandleGroup:
    """A list of `RemovableHandle`s that is itself a context manager (torch/utils/hooks.py style)."""

    def __init__(self) -> None:
        self._handles: list[Removable] = []

    def add(self, handle: Removable) -> None:
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
