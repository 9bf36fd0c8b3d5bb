"""Shared core: simulation kernel, units, random streams, statistics and reports."""
