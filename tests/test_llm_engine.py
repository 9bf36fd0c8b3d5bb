"""The cluster engine: exact single-request behaviour, conservation, queueing and bad configurations."""

from __future__ import annotations

import numpy as np
import pytest

from strato.errors import ConfigError
from strato.llm.catalog import get_model
from strato.llm.designs import Design, make_design
from strato.llm.engine import ClusterSimulator, SchedulerConfig
from strato.llm.perf import AnalyticModel, PerfModel
from strato.traces.llm import LlmRequests, synthetic

MODEL = get_model("llama2-70b")


def perf_models(design: Design) -> dict[str, PerfModel]:
    return {pool.machine.name: AnalyticModel(MODEL, pool.machine, 8) for pool in design.pools}


def one(prompt: int, output: int, at: float = 0.0) -> LlmRequests:
    return LlmRequests("one", np.array([at]), np.array([prompt]), np.array([output]))


def test_a_lone_request_on_a_baseline_machine_takes_exactly_its_phase_times() -> None:
    design = make_design("baseline-h100", machines=1)
    perf = perf_models(design)["h100-80gb"]
    times = ClusterSimulator(design, MODEL, perf_models(design)).run(one(1000, 50, at=2.0))
    assert times.ttft_s[0] == pytest.approx(perf.prompt_time_s(1000, 1))
    assert times.tbt_s[0] == pytest.approx(perf.token_time_s(1, 1050), rel=1e-9)


def test_a_lone_request_on_splitwise_pays_the_kv_transfer() -> None:
    design = make_design("splitwise-ha", prompt=1, token=1)
    models = perf_models(design)
    prompt_perf, token_perf = models["h100-80gb"], models["a100-80gb"]
    short = ClusterSimulator(design, MODEL, models).run(one(256, 10))
    long = ClusterSimulator(design, MODEL, models).run(one(4096, 10))
    assert short.ttft_s[0] == pytest.approx(prompt_perf.prompt_time_s(256, 1))
    # Serialised below 512 prompt tokens (all of the cache), layer-wise above (one layer's share).
    link = 200e9 / 8 * 8
    serial = MODEL.kv_bytes_per_token * 256 / link
    layerwise = MODEL.kv_bytes_per_token * 4096 / MODEL.layers / link
    decode_short = 9 * token_perf.token_time_s(1, 266)
    assert short.e2e_s[0] == pytest.approx(short.ttft_s[0] + serial + decode_short)
    assert long.e2e_s[0] - long.ttft_s[0] == pytest.approx(layerwise + 9 * token_perf.token_time_s(1, 4106))


def test_every_request_completes_once_in_order_of_its_phases() -> None:
    requests = synthetic("conv", 20.0, 60.0, seed=2)
    for design in (make_design("baseline-a100", machines=4), make_design("splitwise-aa", prompt=3, token=2)):
        times = ClusterSimulator(design, MODEL, perf_models(design)).run(requests)
        assert np.isfinite(times.completion_s).all()
        assert (times.first_token_s > times.arrival_s).all()
        assert (times.completion_s >= times.first_token_s).all()
        single = requests.output_tokens == 1
        assert (times.completion_s[single] == times.first_token_s[single]).all()


def test_queueing_grows_with_load_and_shrinks_with_machines() -> None:
    requests = synthetic("code", 40.0, 60.0, seed=1)
    small = make_design("splitwise-hh", prompt=2, token=2)
    large = make_design("splitwise-hh", prompt=8, token=4)
    slow = ClusterSimulator(small, MODEL, perf_models(small)).run(requests)
    fast = ClusterSimulator(large, MODEL, perf_models(large)).run(requests)
    assert np.median(fast.ttft_s) < np.median(slow.ttft_s)


def test_prompt_batches_respect_the_token_limit() -> None:
    design = make_design("splitwise-hh", prompt=1, token=1)
    requests = LlmRequests("burst", np.zeros(3), np.array([1500, 1500, 400]), np.array([2, 2, 2]))
    times = ClusterSimulator(design, MODEL, perf_models(design), SchedulerConfig(max_batch_tokens=2048)).run(
        requests
    )
    # 1500 + 1500 exceeds 2048: the second prompt waits for the first batch, the third rides with it.
    assert times.first_token_s[0] < times.first_token_s[1] == times.first_token_s[2]


def test_bad_designs_and_requests_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown design"):
        make_design("splitwise-zz", prompt=1, token=1)
    with pytest.raises(ConfigError, match="--prompt"):
        make_design("splitwise-hh", prompt=3)
    with pytest.raises(ConfigError, match="at least one machine"):
        make_design("splitwise-hh", prompt=0, token=2)
    design = make_design("baseline-a100", machines=1)
    with pytest.raises(ConfigError, match="KV cache"):
        ClusterSimulator(design, MODEL, perf_models(design)).run(one(4000, 10_000_000))
    with pytest.raises(ConfigError, match="does not fit"):
        ClusterSimulator(
            make_design("baseline-a100", machines=1),
            get_model("bloom-176b"),
            {"a100-80gb": AnalyticModel(get_model("bloom-176b"), design.pools[0].machine, 2)},
        )


def test_cli_simulate_json_has_the_promised_fields() -> None:
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "strato",
            "llm",
            "simulate",
            "--design",
            "splitwise-hh",
            "--prompt",
            "4",
            "--token",
            "2",
            "--rate",
            "5",
            "--duration",
            "60",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    data = json.loads(result.stdout)
    for key in (
        "throughput_rps",
        "ttft_s",
        "tbt_s",
        "e2e_s",
        "slo_met",
        "slo_checks",
        "cost_per_hour",
        "power_kw",
    ):
        assert key in data
    assert set(data["ttft_s"]) == {"p50", "p90", "p99"}
    assert len(data["slo_checks"]) == 9
    assert data["cost_per_hour"] == 6 * 38.0
    bad = subprocess.run(
        [sys.executable, "-m", "strato", "llm", "simulate", "--design", "splitwise-hh"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2 and "--prompt" in bad.stderr


def test_routers_are_pluggable_objects() -> None:
    from strato.llm.schedulers import ROUTERS, Router, register_router

    class FirstMachine(Router):
        """Sends everything to machine 0: a router a test can see the effect of."""

        name = "first-machine"

        def route(self, cluster, prompt_tokens, output_tokens):  # type: ignore[no-untyped-def]
            return cluster.nodes[0], cluster.nodes[0]

    register_router(FirstMachine.name, FirstMachine)
    try:
        design = make_design("baseline-h100", machines=3)
        requests = synthetic("conv", 5.0, 30.0, seed=4)
        simulator = ClusterSimulator(
            design, MODEL, perf_models(design), SchedulerConfig(router="first-machine")
        )
        simulator.run(requests)
    finally:
        # The registry is process-wide: other tests list the known routers.
        ROUTERS.remove(FirstMachine.name)
    assert simulator.nodes[0].busy_s > 0 and simulator.nodes[1].busy_s == simulator.nodes[2].busy_s == 0
    with pytest.raises(ConfigError, match="unknown router"):
        ClusterSimulator(design, MODEL, perf_models(design), SchedulerConfig(router="nobody"))


def test_the_preemption_cap_lets_a_starved_decode_through() -> None:
    # One decode request, then a stream of 2048-token prompts that each fill a whole batch: with prompts
    # always first the decode waits for the stream to end; with a cap of 2 it rides every third iteration.
    arrivals = np.concatenate([[0.0], 0.5 + 0.05 * np.arange(60)])
    prompts = np.array([100] + [2048] * 60)
    outputs = np.array([20] + [1] * 60)
    requests = LlmRequests("stream", arrivals, prompts, outputs)
    design = make_design("baseline-h100", machines=1)
    uncapped = ClusterSimulator(design, MODEL, perf_models(design)).run(requests)
    config = SchedulerConfig(max_preemptions=2)
    capped = ClusterSimulator(design, MODEL, perf_models(design), config).run(requests)
    assert capped.completion_s[0] < uncapped.completion_s[0]
    assert np.isfinite(capped.completion_s).all()


def test_snapshots_show_the_machines_as_the_run_goes_and_idle_at_its_end() -> None:
    design = make_design("splitwise-hh", prompt=2, token=2)
    requests = synthetic("code", 7.0, 30.0, seed=0)
    simulator = ClusterSimulator(design, MODEL, perf_models(design))
    simulator.start(requests)
    first = simulator.snapshot()
    assert first.now_s == 0.0 and first.running
    assert [m.home_role for m in first.machines] == ["prompt", "prompt", "token", "token"]
    assert all(m.busy_s == 0.0 and m.served_requests == 0 and not m.busy for m in first.machines)
    simulator.advance(15.0)
    middle = simulator.snapshot()
    assert middle.now_s == 15.0 and middle.running
    assert any(m.busy for m in middle.machines)
    for machine in middle.machines:
        assert machine.role in (machine.home_role, "mixed")
        assert 0.0 <= machine.kv_util <= 1.0
        assert machine.decoding == 0 or machine.busy
    simulator.advance(np.inf)
    last = simulator.snapshot()
    times = simulator.result()
    assert not last.running and last.now_s == float(times.completion_s.max())
    assert sum(m.served_requests for m in last.machines) == len(requests)
    # Single-token requests finish on their prompt machine, the others where they decoded.
    assert sum(m.served_requests for m in last.machines if m.home_role == "prompt") == int(
        (requests.output_tokens == 1).sum()
    )
    assert all(m.role == m.home_role and not m.busy and m.kv_used_tokens == 0 for m in last.machines)
    assert all(m.queued_prompts == m.queued_decodes == m.pending_decode_tokens == 0 for m in last.machines)
    assert [m.busy_s for m in last.machines] == [node.busy_s for node in simulator.nodes]


def test_a_simulation_result_is_typed_and_flattens_for_tables_and_json() -> None:
    from strato.llm.simulate import SimulationSpec, simulate

    result = simulate(SimulationSpec("splitwise-hh", prompt=2, token=2), synthetic("code", 4.0, 30.0, seed=0))
    assert result.completed == result.requests == len(synthetic("code", 4.0, 30.0, seed=0))
    assert len(result.slo_checks) == 9 and result.slo_met == all(c.met for c in result.slo_checks)
    row = result.to_row()
    assert row["ttft_p50"] == result.ttft_s.p50 and row["e2e_p99"] == result.e2e_s.p99
    assert "slo_checks" not in row
    data = result.to_json()
    assert data["ttft_s"] == {"p50": result.ttft_s.p50, "p90": result.ttft_s.p90, "p99": result.ttft_s.p99}
    assert data["slo_checks"] == [check.to_json() for check in result.slo_checks]
