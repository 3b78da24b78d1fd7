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


class ArgumentTypeError(ConfigError, TypeError):
    """An argument of the wrong type (a TypeError too, as Python's own would be)."""


class NotFoundError(GradDoctorError, KeyError):
    """A name that is not there (a layer, statistic, logged scalar, step, remedy): the message says
    which names there are. A KeyError too, so `except KeyError` keeps working."""

    def __str__(self) -> str:  # the message itself, not KeyError's repr of it
        return str(self.args[0]) if self.args else ""
