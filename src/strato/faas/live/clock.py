"""Policy time for the live node: real time x ``time_scale``, in integer µs, and timers on it.

The node never reads the time for keep-alive itself: it asks a :class:`PolicyClock`, so a test can drive
the node with a fake clock that orders simultaneous events as the simulator's kernel does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from strato.faas.keepalive_core import Phase


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class PolicyClock(Protocol):
    def now_us(self) -> int:
        """Policy time now, in µs since the node started."""
        ...

    def call_at(self, when_us: int, phase: Phase, app: int, callback: Callable[[], None]) -> Cancellable:
        """Run ``callback`` at policy time ``when_us``. A clock that can see ties runs them in ``(phase,
        app)`` order; a real clock cannot, and ignores both."""
        ...


class ScaledClock:
    """Real time scaled by ``time_scale``: a policy's 10 minutes last 10 real seconds at 60x."""

    def __init__(self, time_scale: float) -> None:
        self.time_scale = time_scale
        # Not loop.time(): uvloop's clock counts whole milliseconds, too coarse for cold starts.
        self.origin = time.perf_counter()

    def now_us(self) -> int:
        return round((time.perf_counter() - self.origin) * self.time_scale * 1e6)

    def call_at(self, when_us: int, phase: Phase, app: int, callback: Callable[[], None]) -> Cancellable:
        delay_s = max(when_us - self.now_us(), 0) / 1e6 / self.time_scale
        return asyncio.get_running_loop().call_later(delay_s, callback)
