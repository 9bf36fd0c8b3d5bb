"""Test-wide settings and fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so a clean CI clone tests exactly what passed here;
# HYPOTHESIS_PROFILE=explore searches new examples (and finds new counterexamples) when asked to.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture
def cpu_hogs(request: pytest.FixtureRequest) -> Iterator[list[int]]:
    """Busy-loop processes running beside the test for its whole duration; their PIDs.

    How many: the test's indirect parameter (``@pytest.mark.parametrize("cpu_hogs", [2], indirect=True)``),
    else one per CPU. Each is stopped by its own PID when the test ends.
    """
    count = int(getattr(request, "param", os.cpu_count() or 1))
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield [hog.pid for hog in hogs]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
