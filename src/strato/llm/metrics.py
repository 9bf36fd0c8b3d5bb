"""Latency metrics and the Splitwise SLOs.

Per request: TTFT (arrival to first token), E2E (arrival to last token) and TBT (the mean time between
its tokens after the first, i.e. (E2E - TTFT) / (output tokens - 1); requests with one output token
have no TBT). The SLOs compare each request with itself running alone on a DGX-A100: its *slowdown* is
measured / alone, and all nine checks must hold: the p50/p90/p99 slowdown of TTFT within 2x/3x/6x, of TBT
and of E2E within 1.25x/1.5x/5x (REFERENCE section 4).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError

PERCENTILES = (50, 90, 99)
SloMetric = Literal["ttft", "tbt", "e2e"]
SLO_LIMITS: dict[SloMetric, tuple[float, float, float]] = {
    "ttft": (2.0, 3.0, 6.0),
    "tbt": (1.25, 1.5, 5.0),
    "e2e": (1.25, 1.5, 5.0),
}


class PhaseTimes(Protocol):
    """What the SLO reference needs from a performance model (see :mod:`strato.llm.perf`)."""

    def prompt_time_s(self, prompt_tokens: int, batch_size: int = 1) -> float: ...

    def token_time_s(self, batch_size: int, context_tokens: int | None = None) -> float: ...


@dataclass(frozen=True)
class RequestTimes:
    """When each request arrived, got its first token and finished (seconds), and how many tokens."""

    arrival_s: NDArray[np.float64]
    first_token_s: NDArray[np.float64]
    completion_s: NDArray[np.float64]
    prompt_tokens: NDArray[np.int64]
    output_tokens: NDArray[np.int64]

    @property
    def ttft_s(self) -> NDArray[np.float64]:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> NDArray[np.float64]:
        return self.completion_s - self.arrival_s

    @property
    def tbt_s(self) -> NDArray[np.float64]:
        """Mean time between tokens of each request with at least two output tokens."""
        several = self.output_tokens > 1
        return (self.completion_s[several] - self.first_token_s[several]) / (self.output_tokens[several] - 1)


CONVENTIONS = ("strato", "public-sim")
"""``strato``: TBT over the tokens after the first, reference decode at batch 1, slowdown <= limit.
``public-sim``: as the public Splitwise simulator and its notebooks compute them (docs/splitwise-sim.md
section 8): TBT = (E2E - TTFT) / all output tokens, the reference TBT looked up at the prompt size, and
every slowdown strictly below its limit."""


def _reference_tbt(times: RequestTimes, reference: PhaseTimes, convention: str) -> NDArray[np.float64]:
    if convention == "public-sim":
        return np.array([reference.token_time_s(int(p)) for p in times.prompt_tokens.tolist()])
    return np.full(times.prompt_tokens.size, reference.token_time_s(1))


def alone_times(times: RequestTimes, reference: PhaseTimes, convention: str = "strato") -> RequestTimes:
    """The same requests, each alone on the reference machine (arriving at 0, never queued)."""
    if convention not in CONVENTIONS:
        raise ConfigError(f"metric convention must be one of {', '.join(CONVENTIONS)}, not {convention!r}")
    prompt_s = np.array([reference.prompt_time_s(int(p), 1) for p in times.prompt_tokens.tolist()])
    tbt_alone = _reference_tbt(times, reference, convention)
    zero = np.zeros_like(prompt_s)
    return RequestTimes(
        zero,
        prompt_s,
        prompt_s + (times.output_tokens - 1) * tbt_alone,
        times.prompt_tokens,
        times.output_tokens,
    )


def tbt_s(times: RequestTimes, convention: str = "strato") -> NDArray[np.float64]:
    if convention == "public-sim":
        return (times.completion_s - times.first_token_s) / times.output_tokens
    return times.tbt_s


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


@dataclass(frozen=True)
class Percentiles:
    """The p50, p90 and p99 of one latency in seconds (None when no request has it)."""

    p50: float | None
    p90: float | None
    p99: float | None

    @classmethod
    def of(cls, values: NDArray[np.float64]) -> Percentiles:
        if values.size == 0:
            return cls(None, None, None)
        p50, p90, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
        return cls(p50, p90, p99)

    def to_row(self) -> dict[str, float | None]:
        return asdict(self)

    def to_json(self) -> dict[str, float | None]:
        return {key: _finite(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class LatencySummary:
    ttft_s: Percentiles
    tbt_s: Percentiles
    e2e_s: Percentiles


def latency_summary(times: RequestTimes, convention: str = "strato") -> LatencySummary:
    return LatencySummary(
        ttft_s=Percentiles.of(times.ttft_s),
        tbt_s=Percentiles.of(tbt_s(times, convention)),
        e2e_s=Percentiles.of(times.e2e_s),
    )


@dataclass(frozen=True)
class SloCheck:
    """One of the nine checks: the ``percentile``-th slowdown of ``metric`` against its limit."""

    metric: SloMetric
    percentile: int
    slowdown: float | None
    """None when no request has the metric (then the check is not met)."""
    limit: float
    met: bool

    def to_json(self) -> dict[str, str | int | float | bool | None]:
        return {**asdict(self), "slowdown": _finite(self.slowdown)}


def slo_checks(times: RequestTimes, reference: PhaseTimes, convention: str = "strato") -> list[SloCheck]:
    """The nine checks: percentile of each request's slowdown against its limit."""
    alone = alone_times(times, reference, convention)
    if convention == "public-sim":
        # Its reference TBT is the lone decode iteration itself, compared with the per-request average.
        tbt_slowdown = tbt_s(times, convention) / _reference_tbt(times, reference, convention)
    else:
        tbt_slowdown = times.tbt_s / alone.tbt_s
    slowdowns: dict[SloMetric, NDArray[np.float64]] = {
        "ttft": times.ttft_s / alone.ttft_s,
        "tbt": tbt_slowdown,
        "e2e": times.e2e_s / alone.e2e_s,
    }
    checks = []
    for metric, limits in SLO_LIMITS.items():
        values = slowdowns[metric]
        for q, limit in zip(PERCENTILES, limits, strict=True):
            slowdown = float(np.percentile(values, q)) if values.size else None
            if slowdown is None:
                met = False
            else:
                met = slowdown < limit if convention == "public-sim" else slowdown <= limit
            checks.append(SloCheck(metric, q, slowdown, limit, met))
    return checks
