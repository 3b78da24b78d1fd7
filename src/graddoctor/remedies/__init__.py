"""Remedies for gradient-flow problems: the catalog (data) and model surgery (`surgery`)."""

from .catalog import CATALOG, Remedy, get_remedy
from .surgery import (
    Edit, RemedyError, Residual, Surgery, add_residual, apply_remedy, insert_norm, reinit, swap_activation,
)

__all__ = [
    "CATALOG", "Remedy", "get_remedy", "Edit", "Surgery", "RemedyError", "Residual", "swap_activation", "reinit",
    "insert_norm", "add_residual", "apply_remedy",
]
