"""The keep-alive engines: hand-made cases with known answers, and fast == event engine exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faas_helpers import MIN, H, S, make_invocations
from strato.faas.policies import HybridHistogram, parse_policy
from strato.faas.simulator import EventSimulator, simulate, simulate_fast
from strato.traces.faas.idle import IdleProfile

MEMORY = np.array([256.0, 128.0, 512.0, 64.0])


def run_both(invocations, spec, memory=None):
    memory = MEMORY[: invocations.n_apps] if memory is None else memory
    fast = simulate_fast(IdleProfile.from_invocations(invocations), parse_policy(spec), memory)
    event = EventSimulator(invocations, memory).run(parse_policy(spec))
    assert fast is not None
    np.testing.assert_array_equal(fast.app_cold_starts, event.app_cold_starts)
    np.testing.assert_array_equal(fast.app_wasted_us, event.app_wasted_us)
    return fast


def test_single_invocation_is_one_cold_start_and_never_unload_wastes_the_rest_of_the_day():
    inv = make_invocations([[(10 * MIN, 2 * S)]], horizon_us=24 * H)
    result = run_both(inv, "never-unload")
    assert result.cold_starts == 1
    assert result.app_wasted_us[0] == 24 * H - (10 * MIN + 2 * S)
    fixed = run_both(inv, "fixed:10m")
    assert fixed.cold_starts == 1
    assert fixed.app_wasted_us[0] == 10 * MIN


def test_periodic_app_fixed_keepalive_shorter_than_period_always_cold():
    calls = [(k * 30 * MIN, S) for k in range(48)]
    inv = make_invocations([calls], horizon_us=24 * H)
    short = run_both(inv, "fixed:10m")
    assert short.cold_starts == 48
    long = run_both(inv, "fixed:60m")
    assert long.cold_starts == 1


def test_periodic_app_hybrid_learns_the_period_and_prewarms():
    calls = [(k * 30 * MIN, S) for k in range(48)]
    inv = make_invocations([calls], horizon_us=24 * H)
    result = run_both(inv, "hybrid")
    # First call cold; the first idle period has no history (keep the whole 4 h range): warm.
    # From then on the histogram (all ITs in the 29-minute bin) pre-warms just in time.
    assert result.cold_starts == 1
    idle = 30 * MIN - S
    prewarm = math.floor(29 * MIN * 0.9)
    unload = math.ceil(30 * MIN * 1.1)
    tail = 24 * H - (47 * 30 * MIN + S)
    expected = idle + 46 * (idle - prewarm) + max(min(tail, unload) - prewarm, 0)
    assert result.app_wasted_us[0] == expected


def test_app_idle_longer_than_range_is_cold_each_time_until_arima_takes_over():
    calls = [(0, S), (5 * H, S), (10 * H, S), (15 * H, S), (20 * H, S)]
    inv = make_invocations([calls], horizon_us=24 * H)
    no_arima = run_both(inv, "hybrid:arima=off")
    assert no_arima.cold_starts == 5  # every IT (5 h) exceeds the 4 h fallback keep-alive
    with_arima = run_both(inv, "hybrid")
    # After one out-of-bound IT the ARIMA prediction of a constant series is the constant: warm.
    assert with_arima.cold_starts == 2
    assert with_arima.app_wasted_us[0] < no_arima.app_wasted_us[0]


def test_overlapping_executions_are_warm_and_make_no_idle_time():
    calls = [(0, 10 * S), (5 * S, 10 * S), (15 * S, S), (40 * MIN, S)]
    inv = make_invocations([calls], horizon_us=H)
    profile = IdleProfile.from_invocations(inv)
    # Busy 0..15 s (the third call arrives exactly at the end of the second: still busy), then idle.
    assert profile.gap_us.tolist() == [40 * MIN - 16 * S]
    result = run_both(inv, "fixed:10m")
    assert result.cold_starts == 2
    assert result.app_invocations[0] == 4


def test_boundaries_arrival_at_unload_is_cold_and_at_prewarm_is_warm():
    inv = make_invocations([[(0, 0), (10 * MIN, 0)]], horizon_us=H)
    assert run_both(inv, "fixed:10m").cold_starts == 2
    inv = make_invocations([[(0, 0), (10 * MIN - 1, 0)]], horizon_us=H)
    assert run_both(inv, "fixed:10m").cold_starts == 1


def test_apps_are_independent_without_capacity():
    a = [(k * 7 * MIN, 3 * S) for k in range(30)]
    b = [(k * 50 * MIN + 13 * S, 20 * S) for k in range(20)]
    together = run_both(make_invocations([a, b], horizon_us=24 * H), "hybrid:range=1h")
    alone_a = run_both(make_invocations([a], horizon_us=24 * H), "hybrid:range=1h")
    assert together.app_cold_starts[0] == alone_a.app_cold_starts[0]
    assert together.app_wasted_us[0] == alone_a.app_wasted_us[0]


def test_greedy_dual_evicts_the_lowest_priority_app_under_capacity():
    # App 0 (256 MB) is used often, app 1 (128 MB) once, app 2 (512 MB) arrives last.
    a0 = [(k * MIN, S) for k in range(10)]
    a1 = [(30 * S, S)]
    a2 = [(20 * MIN, S)]
    inv = make_invocations([a0, a1, a2], horizon_us=H)
    memory = np.array([256.0, 128.0, 512.0])
    capacity = 800.0  # 256 + 128 + 512 = 896 does not fit: one idle app must go.
    result = EventSimulator(inv, memory, capacity_mb=capacity).run(parse_policy("greedy-dual"))
    # Priorities: app 0: 10 * 1 s / 256 MB = 0.039; app 1: 1 s / 128 MB = 0.0078 -> app 1 is evicted.
    assert result.evictions == 1
    assert result.rejections == 0
    assert result.app_cold_starts.tolist() == [1, 1, 1]
    assert result.app_wasted_us[1] == 20 * MIN - 31 * S


def test_a_cold_start_that_cannot_fit_is_rejected_and_invisible_to_the_policy():
    # App 0 runs 0..10 min and holds 300 of 400 MB; app 1 arrives at 1 min: nothing idle to evict.
    inv = make_invocations([[(0, 10 * MIN)], [(MIN, S), (12 * MIN, S)]], horizon_us=H)
    memory = np.array([300.0, 300.0])
    result = EventSimulator(inv, memory, capacity_mb=400.0).run(parse_policy("fixed:10m"))
    assert result.rejections == 1
    assert result.evictions == 1  # at 12 min app 0 is idle (kept for 10 min) and makes room
    assert result.app_invocations.tolist() == [1, 1]
    assert result.app_cold_starts.tolist() == [1, 1]
    assert result.app_wasted_us.tolist() == [2 * MIN, 10 * MIN]


def test_a_rejection_evicts_nothing_even_when_some_idle_memory_exists():
    # Capacity 500: app 0 (200) idle, app 1 (250) busy; app 2 needs 400 > 50 free + 200 idle.
    inv = make_invocations([[(0, S)], [(MIN, 10 * MIN)], [(2 * MIN, S)]], horizon_us=H)
    memory = np.array([200.0, 250.0, 400.0])
    result = EventSimulator(inv, memory, capacity_mb=500.0).run(parse_policy("never-unload"))
    assert result.rejections == 1
    assert result.evictions == 0
    assert result.app_wasted_us[0] == H - S


def test_equal_eviction_ranks_go_by_app_index():
    # fixed:30m ranks by idle start (LRU); apps 1 and 0 go idle at the same instant: app 0 goes first.
    inv = make_invocations([[(0, MIN)], [(30 * S, 30 * S)], [(2 * MIN, S)]], horizon_us=H)
    memory = np.array([100.0, 100.0, 100.0])
    result = EventSimulator(inv, memory, capacity_mb=250.0).run(parse_policy("fixed:30m"))
    assert result.evictions == 1
    assert result.app_wasted_us.tolist()[:2] == [MIN, 30 * MIN]


def test_ttl_policies_under_capacity_evict_the_least_recently_used():
    a0 = [(0, S)]
    a1 = [(2 * MIN, S)]
    a2 = [(5 * MIN, S)]
    inv = make_invocations([a0, a1, a2], horizon_us=H)
    memory = np.array([100.0, 100.0, 100.0])
    result = EventSimulator(inv, memory, capacity_mb=250.0).run(parse_policy("fixed:30m"))
    assert result.evictions == 1
    assert result.app_wasted_us[0] == 5 * MIN - S  # app 0 expires first, so it is evicted at 5 min


def test_simulate_uses_event_engine_under_capacity_and_fast_engine_otherwise():
    calls = [[(k * 3 * MIN, S) for k in range(20)], [(k * 5 * MIN, 2 * S) for k in range(12)]]
    inv = make_invocations(calls, horizon_us=2 * H)
    memory = np.array([100.0, 100.0])
    policies = [parse_policy("fixed:10m"), parse_policy("hybrid:range=1h")]
    free = simulate(inv, memory, policies)
    roomy = simulate(inv, memory, policies, capacity_mb=10_000.0)
    for a, b in zip(free, roomy, strict=True):
        np.testing.assert_array_equal(a.app_cold_starts, b.app_cold_starts)
        np.testing.assert_array_equal(a.app_wasted_us, b.app_wasted_us)


@st.composite
def workloads(draw):
    n_apps = draw(st.integers(1, 4))
    horizon = draw(st.integers(30, 600)) * MIN
    per_app = []
    for _ in range(n_apps):
        n = draw(st.integers(0, 25))
        scale = draw(st.sampled_from([S, 30 * S, 3 * MIN, 40 * MIN, 3 * H]))
        gaps = draw(st.lists(st.integers(0, 3 * scale), min_size=n, max_size=n))
        durations = draw(st.lists(st.integers(0, 2 * scale), min_size=n, max_size=n))
        times = np.cumsum(gaps).tolist()
        per_app.append([(t, d) for t, d in zip(times, durations, strict=True) if t < horizon])
    return make_invocations(per_app, horizon_us=horizon)


POLICY_SPECS = [
    "never-unload",
    "fixed:1m",
    "fixed:10m",
    "greedy-dual",
    "hybrid",
    "hybrid:range=30m,bin=1m",
    "hybrid:range=10m,bin=30s,cv=0.5,head=20,tail=80",
    "hybrid:range=20m,min-samples=3,oob=0.3",
    "hybrid:range=5m,arima=off",
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from(POLICY_SPECS))
def test_fast_engine_agrees_exactly_with_event_engine(invocations, spec):
    run_both(invocations, spec)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 6 * H), max_size=60),
    st.sampled_from(["hybrid", "hybrid:range=1h,bin=5m", "hybrid:range=10m,bin=1m,cv=1,min-samples=2"]),
)
def test_hybrid_batch_windows_match_sequential_decisions(idle, spec):
    policy = parse_policy(spec)
    assert isinstance(policy, HybridHistogram)
    idle_us = np.asarray(idle, dtype=np.int64)
    prewarm, unload = policy.batch_windows(idle_us)
    state = policy.new_state()
    for i in range(idle_us.size + 1):
        window = policy.decide(state)
        assert (prewarm[i], unload[i]) == (window.prewarm_us, window.unload_us), i
        if i < idle_us.size:
            policy.on_idle_time(state, int(idle_us[i]))


def test_hybrid_batch_path_chunks_large_histories(monkeypatch):
    import strato.faas.policies.hybrid as hybrid_module

    rng = np.random.default_rng(5)
    idle = rng.integers(1, 3 * H, size=3000).astype(np.int64)
    policy = parse_policy("hybrid:range=4h,cv=0,oob=0.99")
    whole = policy.batch_windows(idle)
    monkeypatch.setattr(hybrid_module, "_CHUNK_CELLS", 997)
    chunked = policy.batch_windows(idle)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])


@pytest.mark.parametrize(
    "spec",
    [
        "fixed:0m",
        "fixed",
        "hybrid:range=30s,bin=1m",
        "hybrid:head=50,tail=10",
        "hybrid:colour=red",
        "hybrid:arima=1-2",
        "lru",
        "never-unload:5m",
    ],
)
def test_bad_policy_specs_are_clear_errors(spec):
    from strato.errors import ConfigError

    with pytest.raises(ConfigError):
        parse_policy(spec)
