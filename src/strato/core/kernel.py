"""A tiny discrete-event simulation kernel.

Events are ``(time, priority, sequence)``-ordered callbacks on a binary heap: at equal times a lower
``priority`` runs first, then insertion order, so every run is deterministic. Cancelling marks an event
dead instead of searching the heap (lazy deletion). Time is whatever unit the caller uses; the FaaS
engines use integer microseconds so that their arithmetic is exact.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class Event:
    __slots__ = ("action", "args", "cancelled", "time")

    def __init__(self, time: int | float, action: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.time = time
        self.action = action
        self.args = args
        self.cancelled = False


class Kernel:
    """Schedules callbacks in time order and runs them."""

    def __init__(self, start: int | float = 0) -> None:
        self.now: int | float = start
        self._queue: list[tuple[int | float, int, int, Event]] = []
        self._sequence = 0

    def schedule(
        self, time: int | float, action: Callable[..., None], *args: Any, priority: int = 0
    ) -> Event:
        """Run ``action(*args)`` at ``time``; returns a handle for :meth:`cancel`."""
        if time < self.now:
            raise ValueError(f"cannot schedule at {time}, the clock is already at {self.now}")
        event = Event(time, action, args)
        heapq.heappush(self._queue, (time, priority, self._sequence, event))
        self._sequence += 1
        return event

    @staticmethod
    def cancel(event: Event | None) -> None:
        if event is not None:
            event.cancelled = True

    def peek(self) -> int | float | None:
        """Time of the next live event, or None."""
        while self._queue and self._queue[0][3].cancelled:
            heapq.heappop(self._queue)
        return self._queue[0][0] if self._queue else None

    def step(self) -> bool:
        """Run the next live event; False when there is none."""
        while self._queue:
            time, _, _, event = heapq.heappop(self._queue)
            if event.cancelled:
                continue
            self.now = time
            event.action(*event.args)
            return True
        return False

    def run(self, until: int | float | None = None) -> None:
        """Run events in order; with ``until``, stop before any event later than it."""
        while True:
            next_time = self.peek()
            if next_time is None or (until is not None and next_time > until):
                break
            self.step()
        if until is not None and until > self.now:
            self.now = until
