"""Fixed keep-alive (the state of practice: AWS ~10 min, Azure 20 min) and never-unload."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from strato.core.units import format_duration
from strato.errors import ConfigError
from strato.faas.policies.base import NEVER, KeepAlivePolicy, Window, spec_name


class FixedKeepAlive(KeepAlivePolicy):
    """Keep every application loaded for ``keepalive_s`` after each execution."""

    history_free = True

    def __init__(self, keepalive_s: float) -> None:
        if not keepalive_s > 0:
            raise ConfigError(f"fixed keep-alive must be positive, got {keepalive_s} s")
        self.keepalive_us = round(keepalive_s * 1e6)
        self.name = spec_name("fixed", format_duration(self.keepalive_us / 1e6))

    def decide(self, state: Any) -> Window:
        return Window(0, self.keepalive_us)

    def batch_windows(self, idle_us: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        n = idle_us.size + 1
        return np.zeros(n, dtype=np.int64), np.full(n, self.keepalive_us, dtype=np.int64)


class NeverUnload(KeepAlivePolicy):
    """Load each application on first use and keep it forever: cold starts = apps invoked."""

    name = "never-unload"
    history_free = True

    def decide(self, state: Any) -> Window:
        return Window(0, NEVER)

    def batch_windows(self, idle_us: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        n = idle_us.size + 1
        return np.zeros(n, dtype=np.int64), np.full(n, NEVER, dtype=np.int64)
