"""The command line, `graddoctor <verb>`: every verb, argument parsing, loading the user's MODEL and data.

The top layer: it imports the library and nothing imports it (the entry point is `main`).
"""

from ._main import main

__all__ = ["main"]
