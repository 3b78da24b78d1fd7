"""`compare`: train the user's model with and without remedies, several seeds each, in worker processes,
and say which remedy helps (a verdict per variant, from the spread over seeds).

`_compare` checks the arguments and builds the tasks; `_run` trains one task and measures it; `_verdict`
turns per-seed metrics into a verdict; `_text` renders the table.
"""

from ._compare import Comparison, compare

__all__ = ["compare", "Comparison"]
