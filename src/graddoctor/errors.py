"""Errors raised by graddoctor. Every error says what was received, what was expected and what to do."""

from __future__ import annotations


class GradDoctorError(Exception):
    """Base class of every error graddoctor raises on purpose."""


class ConfigError(GradDoctorError, ValueError):
    """A bad argument: wrong type, value out of range, inconsistent options."""


class ProbeError(GradDoctorError, RuntimeError):
    """Instrumentation cannot work on this model or training loop."""


class StoreError(GradDoctorError, OSError):
    """The run store cannot be opened, read or written."""


class StoreWarning(UserWarning):
    """The run store could not be written for a while (disk full, a file-size limit, a lock): training went on."""
