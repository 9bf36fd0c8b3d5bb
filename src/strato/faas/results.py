"""Per-policy outcomes of a keep-alive simulation and the paper's comparison metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from numpy.typing import NDArray

BASELINE_POLICY = "fixed:10m"
"""The paper normalises wasted memory so that this policy scores 100."""

_NOT_COUNTERS = frozenset({"policy", "app_memory_mb"})
"""The :class:`PolicyResult` fields that describe the run rather than count what happened in it."""


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
    rejections: int = 0
    """Cold starts refused because even evicting every idle app left too little memory (not run, not
    counted as invocations; the live node answers them 503)."""

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

    def after(self, prefix: PolicyResult) -> PolicyResult:
        """What this run counted after ``prefix``, the same policy's run on a prefix of the same invocations.

        Engines are causal, so a run on the invocations before ``t`` (horizon ``t``) reproduces every
        cold start, eviction and loaded-idle microsecond of the full run before ``t``; the difference is
        exactly what happened from ``t`` on. Every counter field is subtracted, whatever fields exist.
        """
        if prefix.policy != self.policy:
            raise ValueError(f"cannot subtract a run of {prefix.policy} from one of {self.policy}")
        return replace(
            self,
            **{
                f.name: getattr(self, f.name) - getattr(prefix, f.name)
                for f in fields(self)
                if f.name not in _NOT_COUNTERS
            },
        )

    def summary(self, baseline_wasted_gb_s: float | None = None) -> KeepAliveRow:
        wasted = self.wasted_memory_gb_s
        normalized = (
            100.0 * wasted / baseline_wasted_gb_s
            if baseline_wasted_gb_s is not None and baseline_wasted_gb_s > 0
            else None
        )
        return KeepAliveRow(
            policy=self.policy,
            invocations=self.invocations,
            apps_invoked=self.apps_invoked,
            cold_starts=self.cold_starts,
            cold_start_pct=100.0 * self.cold_starts / self.invocations if self.invocations else 0.0,
            cold_start_pct_p50_app=self.cold_start_pct_app_percentile(50.0),
            cold_start_pct_p75_app=self.cold_start_pct_p75_app,
            cold_start_pct_p90_app=self.cold_start_pct_app_percentile(90.0),
            wasted_memory_gb_s=wasted,
            wasted_memory_normalized=normalized,
            evictions=self.evictions,
            rejections=self.rejections,
        )


@dataclass(frozen=True)
class KeepAliveRow:
    """One policy's line of the paper's comparison."""

    policy: str
    invocations: int
    apps_invoked: int
    cold_starts: int
    cold_start_pct: float
    cold_start_pct_p50_app: float
    cold_start_pct_p75_app: float
    """The paper's x axis: cold-start % of the third-quartile application."""
    cold_start_pct_p90_app: float
    wasted_memory_gb_s: float
    wasted_memory_normalized: float | None
    """Wasted memory with the baseline (fixed 10 min) = 100; None without a baseline that wastes any."""
    evictions: int
    rejections: int

    def to_row(self) -> dict[str, str | int | float | None]:
        """Values by column key, for tables (:data:`KEEPALIVE_COLUMNS`)."""
        return asdict(self)

    def to_json(self) -> dict[str, str | int | float | None]:
        """JSON-ready values; a non-finite number becomes null."""
        return {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in asdict(self).items()
        }


def summarise(results: list[PolicyResult], baseline: PolicyResult | None) -> list[KeepAliveRow]:
    """One summary row per policy, wasted memory normalised to ``baseline`` (fixed 10 min) = 100."""
    reference = baseline.wasted_memory_gb_s if baseline is not None else None
    return [result.summary(reference) for result in results]


KEEPALIVE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("policy", "policy"),
    ("invocations", "invocations"),
    ("cold_starts", "cold starts"),
    ("cold_start_pct", "cold %"),
    ("cold_start_pct_p75_app", "p75-app cold %"),
    ("wasted_memory_gb_s", "wasted GiB-s"),
    ("wasted_memory_normalized", "wasted (10m=100)"),
)
"""The comparison table's columns, as (row key, header)."""

CAPACITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("evictions", "evictions"),
    ("rejections", "rejected"),
)
"""Added to :data:`KEEPALIVE_COLUMNS` when any policy evicted or rejected."""

KEEPALIVE_FORMATS: dict[str, str] = {
    "cold_start_pct": ".2f",
    "cold_start_pct_p75_app": ".2f",
    "wasted_memory_gb_s": ",.0f",
    "wasted_memory_normalized": ".1f",
}


def keepalive_columns(rows: list[KeepAliveRow]) -> list[tuple[str, str]]:
    """The columns worth showing for ``rows``: the capacity counters only when a capacity acted."""
    columns = list(KEEPALIVE_COLUMNS)
    if any(row.evictions or row.rejections for row in rows):
        columns += CAPACITY_COLUMNS
    return columns
