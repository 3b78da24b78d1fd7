"""Rendering of recorded runs: terminal tables now; figures and HTML import matplotlib lazily."""
