"""Test-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# Property tests draw the same examples on every run, so a clean CI clone tests exactly what passed here;
# HYPOTHESIS_PROFILE=explore searches new examples (and finds new counterexamples) when asked to.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
