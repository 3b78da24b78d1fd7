"""Instrumentation: which modules to probe, the hooks, and the on-device statistics. torch only."""
