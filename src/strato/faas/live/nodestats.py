"""The live node's counters: per-function reports (``/system/stats``) and Prometheus metrics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from strato.faas.live.metrics import Labels, Registry, labels


@dataclass
class FunctionStats:
    """What only the node counts about a function; keep-alive counts come from the core."""

    scale_outs: int = 0
    errors: int = 0
    start_failures: int = 0


@dataclass(frozen=True)
class FunctionReport:
    """One function's line of ``/system/stats``."""

    invocations: int
    """Admitted invocations (a rejection is not one)."""
    cold_starts: int
    rejections: int
    """Cold starts refused with 503 because the memory budget could not make room."""
    scale_outs: int
    prewarms: int
    unloads: int
    evictions: int
    errors: int
    start_failures: int
    wasted_mb_s: float
    """Memory held while the function was loaded and idle, in MiB x policy-time seconds."""
    instances: int
    memory_mb: float

    def to_json(self) -> dict[str, int | float]:
        return asdict(self)


class NodeMetrics:
    """The node's Prometheus metrics (``/metrics``)."""

    def __init__(
        self,
        instance_rows: Callable[[], list[tuple[tuple[tuple[str, str], ...], float]]],
        used_mb: Callable[[], float],
        budget_mb: float,
    ) -> None:
        self.registry = Registry()
        self.invocations = self.registry.counter(
            "strato_faas_invocations_total", "Invocations answered, by function and HTTP status"
        )
        self.cold = self.registry.counter(
            "strato_faas_cold_starts_total", "Invocations that found their function unloaded"
        )
        self.latency = self.registry.histogram(
            "strato_faas_request_duration_seconds", "Gateway-measured invocation latency"
        )
        self.start = self.registry.histogram(
            "strato_faas_instance_start_seconds", "Time from spawn to handler loaded, by spawn mode"
        )
        self.events = self.registry.counter(
            "strato_faas_keepalive_events_total", "Keep-alive actions: unload, prewarm, evict"
        )
        self.registry.gauge("strato_faas_instances", "Instances by function and state", instance_rows)
        self.registry.gauge(
            "strato_faas_memory_allocated_mb", "Memory reserved by live instances", lambda: [((), used_mb())]
        )
        self.registry.gauge(
            "strato_faas_memory_budget_mb",
            "The node's memory budget",
            lambda: [((), budget_mb)] if math.isfinite(budget_mb) else [],
        )
        self._keys: dict[tuple[str, int], tuple[Labels, Labels]] = {}

    def answered(self, name: str, status: int, latency_s: float) -> None:
        keys = self._keys.get((name, status))
        if keys is None:
            keys = self._keys[(name, status)] = (
                labels(function=name, code=str(status)),
                labels(function=name),
            )
        self.invocations.inc_key(keys[0])
        self.latency.observe_key(keys[1], latency_s)
