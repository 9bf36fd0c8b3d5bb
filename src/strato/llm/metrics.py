"""Latency metrics and the Splitwise SLOs.

Per request: TTFT (arrival to first token), E2E (arrival to last token) and TBT (the mean time between
its tokens after the first, i.e. (E2E - TTFT) / (output tokens - 1); requests with one output token
have no TBT). The SLOs compare each request with itself running alone on a DGX-A100: its *slowdown* is
measured / alone, and all nine checks must hold: the p50/p90/p99 slowdown of TTFT within 2x/3x/6x, of TBT
and of E2E within 1.25x/1.5x/5x (REFERENCE section 4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError

PERCENTILES = (50, 90, 99)
SLO_LIMITS: dict[str, tuple[float, float, float]] = {
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


def _percentiles(values: NDArray[np.float64]) -> dict[str, float | None]:
    if values.size == 0:
        return {f"p{q}": None for q in PERCENTILES}
    return {f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES}


def latency_summary(times: RequestTimes, convention: str = "strato") -> dict[str, dict[str, float | None]]:
    return {
        "ttft_s": _percentiles(times.ttft_s),
        "tbt_s": _percentiles(tbt_s(times, convention)),
        "e2e_s": _percentiles(times.e2e_s),
    }


def slo_checks(
    times: RequestTimes, reference: PhaseTimes, convention: str = "strato"
) -> list[dict[str, Any]]:
    """The nine checks: percentile of each request's slowdown against its limit."""
    alone = alone_times(times, reference, convention)
    if convention == "public-sim":
        # Its reference TBT is the lone decode iteration itself, compared with the per-request average.
        tbt_slowdown = tbt_s(times, convention) / _reference_tbt(times, reference, convention)
    else:
        tbt_slowdown = times.tbt_s / alone.tbt_s
    slowdowns = {
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
            checks.append(
                {"metric": metric, "percentile": q, "slowdown": slowdown, "limit": limit, "met": met}
            )
    return checks
