"""The SQLite run store: stdlib sqlite3 only. Knows nothing of hooks, modules or tensors."""

from .sqlite import RunStore
from .view import RunView, load

__all__ = ["RunStore", "RunView", "load"]
