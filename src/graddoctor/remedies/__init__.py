"""Remedies for gradient-flow problems: the catalog (data). Model surgery comes in a later module."""

from .catalog import CATALOG, Remedy, get_remedy

__all__ = ["CATALOG", "Remedy", "get_remedy"]
