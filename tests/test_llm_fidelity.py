"""strato against the public Splitwise simulator, on the same requests, with its modelling choices.

The reference numbers are the public simulator's own ``summary.csv`` outputs on this machine (Llama2-70B,
TP8, the seeded trace recipe it uses; commands and semantics in docs/splitwise-sim.md section 11).
"""

from __future__ import annotations

import pytest

from data_helpers import shared_data
from strato.llm.catalog import get_model
from strato.llm.compat import BatchTokenTable
from strato.llm.designs import make_design
from strato.llm.engine import ClusterSimulator, SchedulerConfig
from strato.llm.metrics import latency_summary, slo_checks
from strato.traces.llm import read_llm_requests, splitwise_sim_requests

pytestmark = pytest.mark.slow

DATA = shared_data()
PERF = DATA / "splitwise-profiles" / "perf_model.csv"
TRACES = {kind: DATA / "azure-llm-2023" / f"AzureLLMInferenceTrace_{kind}.csv" for kind in ("code", "conv")}

PUBLIC_SIMULATOR = {
    # trace, rate, design, sizes: TTFT p50/p90/p99, TBT p50/p90/p99, E2E p50/p90/p99 (seconds)
    ("conv", 80, "splitwise-hh", (("prompt", 25), ("token", 15))): (
        0.0775,
        0.2180,
        0.3809,
        0.0310,
        0.0312,
        0.0317,
        4.1340,
        13.2597,
        18.8232,
        True,
    ),
    ("conv", 80, "splitwise-ha", (("prompt", 25), ("token", 26))): (
        0.0775,
        0.2180,
        0.3809,
        0.0426,
        0.0428,
        0.0433,
        5.6482,
        18.1776,
        25.8327,
        True,
    ),
    ("conv", 80, "baseline-h100", (("machines", 40),)): (
        0.1008,
        0.2389,
        0.4065,
        0.0366,
        0.0406,
        0.0477,
        4.9410,
        16.0495,
        22.5133,
        True,
    ),
    ("code", 130, "splitwise-hh", (("prompt", 23), ("token", 10))): (
        0.1820,
        0.5708,
        0.8315,
        0.0318,
        0.0558,
        0.1366,
        0.7416,
        2.4241,
        9.9578,
        True,
    ),
    ("code", 130, "splitwise-ha", (("prompt", 23), ("token", 16))): (
        0.1825,
        0.5797,
        1.5944,
        0.0428,
        0.0832,
        0.2469,
        0.8953,
        3.4868,
        14.0418,
        False,
    ),
    ("code", 130, "baseline-h100", (("machines", 40),)): (
        0.1337,
        0.5137,
        0.7755,
        0.0542,
        0.1027,
        0.1670,
        1.0543,
        3.8580,
        16.7878,
        False,
    ),
}


@pytest.mark.shared_data
@pytest.mark.parametrize(("kind", "rate", "design", "sizes"), list(PUBLIC_SIMULATOR))
def test_designs_match_the_public_simulator_within_5_percent(
    kind: str, rate: int, design: str, sizes: tuple[tuple[str, int], ...]
) -> None:
    if not PERF.exists() or not TRACES[kind].exists():
        pytest.skip(f"{PERF} or {TRACES[kind]} is absent (the data folder: strato data list)")
    model = get_model("llama2-70b")
    requests = splitwise_sim_requests(read_llm_requests(TRACES[kind]), rate, 600, seed=0)
    assert len(requests) == {"conv": 48263, "code": 78242}[kind]
    cluster = make_design(design, **dict(sizes))
    perf = {pool.machine.name: BatchTokenTable(PERF, model, pool.machine, 8) for pool in cluster.pools}
    times = ClusterSimulator(cluster, model, perf, SchedulerConfig.public_simulator()).run(requests)
    summary = latency_summary(times, "public-sim")
    ours = [
        value
        for percentiles in (summary.ttft_s, summary.tbt_s, summary.e2e_s)
        for value in (percentiles.p50, percentiles.p90, percentiles.p99)
    ]
    *expected, verdict = PUBLIC_SIMULATOR[(kind, rate, design, sizes)]
    for got, want in zip(ours, expected, strict=True):
        assert got == pytest.approx(want, rel=0.05)
    reference = BatchTokenTable(PERF, model, "a100-80gb", 8)
    assert all(check.met for check in slo_checks(times, reference, "public-sim")) is verdict
