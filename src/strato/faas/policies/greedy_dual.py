"""FaasCache's Greedy-Dual keep-alive (Fuerst & Sharma, ASPLOS 2021).

Keep-alive as caching: an application stays loaded until memory is needed, and then the loaded idle
application with the lowest priority ``clock + frequency * cold_start_cost / memory`` is evicted first.
The priority is fixed when the app is used, so the node's aging clock (raised to each evicted priority)
lets recently used apps outrank long-idle ones. Without a memory capacity it never evicts and behaves like
never-unload. Frequency counts invocations since the app was last loaded, as in FaasCache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from strato.faas.policies.base import NEVER, AppInfo, KeepAlivePolicy, Window


@dataclass
class _GreedyDualState:
    memory_mb: float
    cold_cost_s: float
    frequency: int = 0
    priority: float = 0.0


class GreedyDual(KeepAlivePolicy):
    name = "greedy-dual"
    history_free = True

    def new_state(self, app: AppInfo) -> _GreedyDualState:
        return _GreedyDualState(memory_mb=max(app.memory_mb, 1e-9), cold_cost_s=app.cold_start_us / 1e6)

    def on_invocation(self, state: Any, *, cold: bool, clock: float) -> None:
        state.frequency += 1
        state.priority = clock + state.frequency * state.cold_cost_s / state.memory_mb

    def on_unload(self, state: Any) -> None:
        state.frequency = 0

    def decide(self, state: Any) -> Window:
        return Window(0, NEVER)

    def eviction_rank(self, state: Any, *, clock: float, idle_since_us: int, unload_at_us: int) -> float:
        return float(state.priority)

    def batch_windows(self, idle_us: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        n = idle_us.size + 1
        return np.zeros(n, dtype=np.int64), np.full(n, NEVER, dtype=np.int64)
