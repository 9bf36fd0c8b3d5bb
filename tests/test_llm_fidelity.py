"""strato against the public Splitwise simulator, on the same requests, with its modelling choices.

The reference numbers are the public simulator's own ``summary.csv`` outputs on this machine (Llama2-70B,
TP8, the seeded trace recipe it uses; commands and semantics in docs/splitwise-sim.md section 11).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from strato.llm.catalog import get_model
from strato.llm.compat import BatchTokenTable
from strato.llm.designs import make_design
from strato.llm.engine import ClusterSimulator, SchedulerConfig
from strato.llm.metrics import latency_summary, slo_checks
from strato.traces.llm import read_azure_llm2023, splitwise_sim_requests

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PERF = DATA / "splitwise-profiles" / "perf_model.csv"
CONV = DATA / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"

PUBLIC_SIMULATOR = {
    # design, sizes: TTFT p50/p90/p99, TBT p50/p90/p99, E2E p50/p90/p99 (seconds)
    ("splitwise-hh", (("prompt", 25), ("token", 15))): (
        0.0775, 0.2180, 0.3809, 0.0310, 0.0312, 0.0317, 4.1340, 13.2597, 18.8232),
    ("splitwise-ha", (("prompt", 25), ("token", 26))): (
        0.0775, 0.2180, 0.3809, 0.0426, 0.0428, 0.0433, 5.6482, 18.1776, 25.8327),
    ("baseline-h100", (("machines", 40),)): (
        0.1008, 0.2389, 0.4065, 0.0366, 0.0406, 0.0477, 4.9410, 16.0495, 22.5133),
}


@pytest.mark.shared_data
@pytest.mark.parametrize(("design", "sizes"), list(PUBLIC_SIMULATOR))
def test_designs_match_the_public_simulator_within_5_percent(
        design: str, sizes: tuple[tuple[str, int], ...]) -> None:
    if not PERF.exists() or not CONV.exists():
        pytest.skip(f"{PERF} or {CONV} is absent (they live in ../shared/data beside the checkout)")
    model = get_model("llama2-70b")
    requests = splitwise_sim_requests(read_azure_llm2023(CONV), 80, 600, seed=0)
    assert len(requests) == 48263
    cluster = make_design(design, **dict(sizes))
    perf = {pool.machine.name: BatchTokenTable(PERF, model, pool.machine, 8) for pool in cluster.pools}
    times = ClusterSimulator(cluster, model, perf, SchedulerConfig.public_simulator()).run(requests)
    summary = latency_summary(times, "public-sim")
    ours = [summary[m][q] for m in ("ttft_s", "tbt_s", "e2e_s") for q in ("p50", "p90", "p99")]
    for got, expected in zip(ours, PUBLIC_SIMULATOR[(design, sizes)], strict=True):
        assert got == pytest.approx(expected, rel=0.05)
    reference = BatchTokenTable(PERF, model, "a100-80gb", 8)
    assert all(check["met"] for check in slo_checks(times, reference, "public-sim"))
