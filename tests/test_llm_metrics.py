"""Latency summaries and the nine Splitwise SLO checks."""

from __future__ import annotations

import numpy as np
import pytest

from strato.llm.catalog import get_machine, get_model
from strato.llm.metrics import RequestTimes, alone_times, latency_summary, slo_checks
from strato.llm.perf import AnalyticModel

REFERENCE = AnalyticModel(get_model("llama2-70b"), get_machine("a100-80gb"), 8)


def requests(n: int = 200, seed: int = 0) -> RequestTimes:
    rng = np.random.default_rng(seed)
    prompts = rng.integers(50, 4000, n)
    outputs = rng.integers(1, 300, n)
    return alone_times(RequestTimes(np.zeros(n), np.zeros(n), np.zeros(n), prompts, outputs), REFERENCE)


def stretched(times: RequestTimes, ttft: float, tbt: float) -> RequestTimes:
    first = times.arrival_s + times.ttft_s * ttft
    decode = (times.completion_s - times.first_token_s) * tbt
    return RequestTimes(times.arrival_s, first, first + decode, times.prompt_tokens, times.output_tokens)


def test_a_request_alone_meets_every_slo_with_slowdown_one() -> None:
    checks = slo_checks(requests(), REFERENCE)
    assert len(checks) == 9
    assert all(check.met for check in checks)
    assert all(check.slowdown is not None and abs(check.slowdown - 1.0) < 1e-9 for check in checks)


def test_slowdowns_are_checked_against_their_limits() -> None:
    slow = stretched(requests(), 2.5, 1.3)
    checks = {(c.metric, c.percentile): c for c in slo_checks(slow, REFERENCE)}
    assert not checks[("ttft", 50)].met and checks[("ttft", 90)].met
    assert checks[("ttft", 99)].slowdown == pytest.approx(2.5, abs=1e-9)
    assert not checks[("tbt", 50)].met and checks[("tbt", 90)].met


def test_latency_summary_percentiles_and_single_token_requests() -> None:
    times = requests()
    summary = latency_summary(times)
    ttft = summary.ttft_s
    assert ttft.p50 is not None and ttft.p90 is not None and ttft.p99 is not None
    assert ttft.p50 <= ttft.p90 <= ttft.p99
    assert times.tbt_s.size == int((times.output_tokens > 1).sum())
    assert abs(float(np.median(times.tbt_s)) - REFERENCE.token_time_s(1)) < 1e-9
