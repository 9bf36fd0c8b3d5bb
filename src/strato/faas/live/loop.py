"""The event loop every live-platform process runs: uvloop when installed, asyncio's own otherwise."""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is a speed-up, not a requirement
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def die_with_parent() -> None:
    """Ask the kernel to kill this helper process when the process that started it dies."""
    import contextlib
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    # Not Linux: no such call, and the gateway still stops its helpers on shutdown.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
