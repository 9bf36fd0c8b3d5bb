"""Per-policy outcomes of a keep-alive simulation and the paper's comparison metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

BASELINE_POLICY = "fixed:10m"
"""The paper normalises wasted memory so that this policy scores 100."""


@dataclass(frozen=True)
class PolicyResult:
    """What one policy did to one workload, per application."""

    policy: str
    app_invocations: NDArray[np.int64]
    app_cold_starts: NDArray[np.int64]
    app_wasted_us: NDArray[np.int64]
    """Time each app spent loaded but not executing, in µs."""
    app_memory_mb: NDArray[np.float64]
    evictions: int = 0
    capacity_overflows: int = 0
    """Cold starts that found too little evictable memory and ran over the capacity."""

    @property
    def invocations(self) -> int:
        return int(self.app_invocations.sum())

    @property
    def cold_starts(self) -> int:
        return int(self.app_cold_starts.sum())

    @property
    def apps_invoked(self) -> int:
        return int(np.count_nonzero(self.app_invocations))

    def cold_start_pct_by_app(self) -> NDArray[np.float64]:
        """Cold-start percentage of every invoked application."""
        invoked = self.app_invocations > 0
        return 100.0 * self.app_cold_starts[invoked] / self.app_invocations[invoked]

    def cold_start_pct_app_percentile(self, q: float) -> float:
        by_app = self.cold_start_pct_by_app()
        return float(np.percentile(by_app, q)) if by_app.size else 0.0

    @property
    def cold_start_pct_p75_app(self) -> float:
        """The paper's x axis: cold-start % of the third-quartile application."""
        return self.cold_start_pct_app_percentile(75.0)

    @property
    def wasted_memory_gb_s(self) -> float:
        """Memory held by idle applications, in GiB-seconds (the traces' "MB" are MiB)."""
        return float(np.dot(self.app_wasted_us / 1e6, self.app_memory_mb) / 1024.0)

    def summary(self, baseline_wasted_gb_s: float | None = None) -> dict[str, Any]:
        wasted = self.wasted_memory_gb_s
        normalized = (
            100.0 * wasted / baseline_wasted_gb_s
            if baseline_wasted_gb_s is not None and baseline_wasted_gb_s > 0
            else None
        )
        return {
            "policy": self.policy,
            "invocations": self.invocations,
            "apps_invoked": self.apps_invoked,
            "cold_starts": self.cold_starts,
            "cold_start_pct": 100.0 * self.cold_starts / self.invocations if self.invocations else 0.0,
            "cold_start_pct_p50_app": self.cold_start_pct_app_percentile(50.0),
            "cold_start_pct_p75_app": self.cold_start_pct_p75_app,
            "cold_start_pct_p90_app": self.cold_start_pct_app_percentile(90.0),
            "wasted_memory_gb_s": wasted,
            "wasted_memory_normalized": normalized,
            "evictions": self.evictions,
            "capacity_overflows": self.capacity_overflows,
        }


def summarise(results: list[PolicyResult], baseline: PolicyResult | None) -> list[dict[str, Any]]:
    """One summary row per policy, wasted memory normalised to ``baseline`` (fixed 10 min) = 100."""
    reference = baseline.wasted_memory_gb_s if baseline is not None else None
    return [result.summary(reference) for result in results]
