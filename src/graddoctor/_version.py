"""The package version, in the lowest layer so that any module may read it (findings' JSON does)."""

__version__ = "0.1.0"
