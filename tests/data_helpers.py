"""Where tests find the real traces: the same data folder as strato itself (``strato data list``)."""

from __future__ import annotations

from pathlib import Path

from strato.traces.datasets import find_data_root


def shared_data() -> Path:
    """``$STRATO_DATA`` or the checkout's ``../shared/data``; without either, a path that does not exist,
    so that tests needing real data skip with their reason."""
    root = find_data_root()
    return root.path if root is not None else Path("/nonexistent/strato-data")
