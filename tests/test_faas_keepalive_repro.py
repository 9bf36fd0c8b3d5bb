"""Keep-alive reproduction knobs: --repeat, --warmup, canonical policy names and typed rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from data_helpers import shared_data
from faas_helpers import MIN, S, make_invocations
from strato.cli.faas import app as faas_app
from strato.errors import ConfigError
from strato.faas.keepalive import (
    compare_policies,
    hybrid_rule_counts,
    invocations_before,
    repeat_invocations,
    simulate_after_warmup,
)
from strato.faas.policies import HybridHistogram, parse_policy
from strato.faas.policies.hybrid import RULES
from strato.faas.results import KeepAliveRow
from strato.faas.simulator import EventSimulator
from strato.traces.faas.azure2019 import read_azure2019
from strato.traces.faas.synth import SynthConfig, generate

REAL_APPS = shared_data() / "azure-functions-2019" / "raw-format-100-8h"


def test_repeat_shifts_each_copy_by_the_horizon_and_keeps_apps_in_time_order():
    inv = make_invocations([[(0, S), (40 * MIN, S)], [(5 * MIN, 2 * S)]], 60 * MIN)
    three = repeat_invocations(inv, 3)
    assert three.horizon_us == 180 * MIN and len(three) == 9
    assert three.app.tolist() == [0] * 6 + [1] * 3
    copies = [0, 60 * MIN, 120 * MIN]
    app0 = [t + c for c in copies for t in (0, 40 * MIN)]
    assert three.arrival_us.tolist() == [*app0, *(5 * MIN + c for c in copies)]
    assert three.duration_us.tolist() == [S, S, S, S, S, S, 2 * S, 2 * S, 2 * S]
    with pytest.raises(ConfigError):
        repeat_invocations(inv, 0)


def test_warmup_counts_what_arrives_after_it_and_the_waste_after_it():
    # fixed 10 min; warm-up ends at 32 min. The idle period 30-35 min straddles it: 3 of its 5 minutes
    # count. The invocation at 35 is warm, then 10 more loaded minutes count. The cold start at 30 does not.
    inv = make_invocations([[(0, 0), (30 * MIN, 0), (35 * MIN, 0)]], 60 * MIN)
    memory = np.array([1024.0])
    for capacity in (None, 1e9):  # the fast engine, then the event engine
        (result,) = simulate_after_warmup(
            inv, memory, [parse_policy("fixed:10m")], warmup_us=32 * MIN, capacity_mb=capacity
        )
        assert result.invocations == 1 and result.cold_starts == 0
        assert result.app_wasted_us.tolist() == [13 * MIN]
        assert result.wasted_memory_gb_s == pytest.approx(13 * 60)


def test_without_warmup_the_first_invocation_of_an_app_is_cold_and_after_it_only_if_new():
    inv = make_invocations([[(0, 0), (50 * MIN, 0)], [(45 * MIN, 0)]], 60 * MIN)
    (result,) = simulate_after_warmup(inv, np.ones(2), [parse_policy("never-unload")], warmup_us=40 * MIN)
    assert result.app_invocations.tolist() == [1, 1]
    assert result.app_cold_starts.tolist() == [0, 1]


arrivals = st.lists(
    st.lists(
        st.tuples(st.integers(0, 240 * MIN - 1), st.integers(0, 20 * MIN)),
        min_size=0,
        max_size=25,
    ),
    min_size=1,
    max_size=5,
)


def _fixed_oracle(per_app, horizon, keepalive, warmup):
    """Cold starts, invocations and waste after ``warmup`` under fixed keep-alive, computed directly."""
    cold, count, wasted = [], [], []
    for calls in per_app:
        calls = sorted(calls)
        busy_until, loaded_until, c, n, w = None, None, 0, 0, 0
        for start, length in calls:
            if busy_until is not None and start > busy_until:
                # idle from busy_until to start, loaded until busy_until + keepalive
                lo, hi = max(busy_until, warmup), min(start, busy_until + keepalive)
                w += max(hi - lo, 0)
            is_cold = busy_until is None or (start > busy_until and start >= loaded_until)
            if start >= warmup:
                n += 1
                c += is_cold
            busy_until = start + length if busy_until is None else max(busy_until, start + length)
            loaded_until = busy_until + keepalive
        if busy_until is not None and busy_until < horizon:
            w += max(min(horizon, busy_until + keepalive) - max(busy_until, warmup), 0)
        cold.append(c)
        count.append(n)
        wasted.append(w)
    return cold, count, wasted


@settings(max_examples=60, deadline=None)
@given(arrivals, st.integers(1, 3), st.integers(0, 200 * MIN), st.sampled_from(["fixed:10m", "hybrid:1h"]))
def test_both_engines_agree_after_warmup_and_fixed_matches_a_direct_count(per_app, repeat, warmup, spec):
    inv = repeat_invocations(make_invocations(per_app, 240 * MIN), repeat)
    memory = np.linspace(100.0, 500.0, len(per_app))
    policy = parse_policy(spec)
    (fast,) = simulate_after_warmup(inv, memory, [policy], warmup_us=warmup)
    (event,) = simulate_after_warmup(inv, memory, [policy], warmup_us=warmup, capacity_mb=1e12)
    for name in ("app_invocations", "app_cold_starts", "app_wasted_us"):
        assert getattr(fast, name).tolist() == getattr(event, name).tolist(), name
    if spec == "fixed:10m":
        repeated = [
            [(start + k * 240 * MIN, length) for k in range(repeat) for start, length in calls]
            for calls in per_app
        ]
        cold, count, wasted = _fixed_oracle(repeated, 240 * MIN * repeat, 10 * MIN, warmup)
        assert fast.app_cold_starts.tolist() == cold
        assert fast.app_invocations.tolist() == count
        assert fast.app_wasted_us.tolist() == wasted


@settings(max_examples=30, deadline=None)
@given(arrivals, st.integers(0, 240 * MIN), st.sampled_from([300.0, 700.0]))
def test_warmup_under_a_capacity_is_the_full_run_less_its_prefix(per_app, warmup, capacity):
    inv = make_invocations(per_app, 240 * MIN)
    memory = np.full(len(per_app), 200.0)
    policy = parse_policy("greedy-dual")
    full = EventSimulator(inv, memory, capacity_mb=capacity).run(policy)
    prefix = EventSimulator(invocations_before(inv, warmup), memory, capacity_mb=capacity).run(policy)
    (after,) = simulate_after_warmup(inv, memory, [policy], warmup_us=warmup, capacity_mb=capacity)
    assert after.evictions == full.evictions - prefix.evictions
    assert after.rejections == full.rejections - prefix.rejections
    assert after.cold_starts + prefix.cold_starts == full.cold_starts
    assert after.invocations + after.rejections == int(np.count_nonzero(inv.arrival_us >= warmup))


def test_policy_names_carry_every_non_default_parameter_and_parse_back():
    for spec, name in [
        ("hybrid", "hybrid:4h"),
        ("hybrid:range=4h", "hybrid:4h"),
        ("hybrid:tail=95", "hybrid:4h,tail=95"),
        ("hybrid:tail=95,range=2h,head=5", "hybrid:2h,tail=95"),
        ("hybrid:arima=off,min-samples=5,bin=30s", "hybrid:4h,bin=30s,min-samples=5,arima=off"),
        ("hybrid:cv=2.5,arima=2-1-0,head-margin=0.2", "hybrid:4h,head-margin=0.2,cv=2.5,arima=2-1-0"),
        ("fixed:600s", "fixed:10m"),
        ("fixed:keepalive=90s", "fixed:90s"),
        ("greedy-dual", "greedy-dual"),
        ("never-unload", "never-unload"),
    ]:
        policy = parse_policy(spec)
        assert policy.name == name
        assert parse_policy(name).name == name


def test_hybrid_and_a_variant_run_side_by_side_but_the_same_policy_twice_does_not():
    workload = generate(SynthConfig(n_apps=30, minutes=120, seed=1))
    comparison = compare_policies(workload, ["hybrid", "hybrid:tail=95"], show_progress=False)
    assert [row.policy for row in comparison.rows] == ["hybrid:4h", "hybrid:4h,tail=95"]
    with pytest.raises(ConfigError, match="listed twice"):
        compare_policies(workload, ["hybrid", "hybrid:range=4h"], show_progress=False)


def test_rows_are_typed_and_json_ready():
    workload = generate(SynthConfig(n_apps=30, minutes=120, seed=1))
    comparison = compare_policies(
        workload, ["never-unload", "fixed:10m"], repeat=2, warmup_s=3600.0, show_progress=False
    )
    row = comparison.row("fixed:10m")
    assert isinstance(row, KeepAliveRow)
    assert row.wasted_memory_normalized == pytest.approx(100.0)
    assert comparison.measured_s == 3 * 3600.0
    assert comparison.title == f"{workload.name} x2, 1h warm-up"
    assert json.loads(json.dumps(row.to_json())) == row.to_row()
    with pytest.raises(ConfigError, match="leaves nothing to measure"):
        compare_policies(workload, ["fixed:10m"], warmup_s=7200.0, show_progress=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--warmup", "16"], "needs a unit"),
        (["--warmup", "3h"], "leaves nothing to measure"),
        (["--warmup", "ten"], "duration"),
        (["--rules", "--json"], "leave out --json"),
    ],
)
def test_cli_warmup_errors_are_one_line_and_exit_2(args, message):
    done = CliRunner().invoke(faas_app, ["simulate", "--trace", "synthetic:apps=20,minutes=120", *args])
    assert done.exit_code == 2
    assert message in done.output


def test_cli_repeat_and_warmup_in_json():
    done = CliRunner().invoke(
        faas_app,
        [
            "simulate",
            "--trace",
            "synthetic:apps=20,minutes=120",
            "--policy",
            "never-unload",
            "--repeat",
            "3",
            "--warmup",
            "2h",
            "--json",
        ],
    )
    assert done.exit_code == 0, done.output
    rows = json.loads(done.output)
    workload = generate(SynthConfig(n_apps=20, minutes=120))
    assert rows[0]["invocations"] == 2 * int(workload.invocation_counts().sum())
    assert rows[0]["cold_starts"] == 0  # every app invoked after the warm-up was seen during it


def test_cli_rules_table_names_every_rule():
    done = CliRunner().invoke(
        faas_app, ["simulate", "--trace", "synthetic:apps=20,minutes=120", "--policy", "hybrid", "--rules"]
    )
    assert done.exit_code == 0, done.output
    assert all(rule in done.output for rule in RULES)


def test_hybrid_4h_dominates_fixed_10m_on_real_apps_with_history():
    if not REAL_APPS.exists():
        pytest.skip(f"real trace {REAL_APPS} is absent (the data folder: strato data list)")
    comparison = compare_policies(
        read_azure2019(REAL_APPS),
        ["fixed:10m", "hybrid"],
        repeat=3,
        warmup_s=16 * 3600.0,
        show_progress=False,
    )
    hybrid, fixed = comparison.row("hybrid:4h"), comparison.row("fixed:10m")
    assert hybrid.cold_start_pct_p75_app < fixed.cold_start_pct_p75_app
    assert hybrid.cold_starts < fixed.cold_starts
    assert hybrid.wasted_memory_normalized is not None and hybrid.wasted_memory_normalized < 100.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 6 * 60 * 60 * S), min_size=0, max_size=40),
    st.sampled_from(["hybrid", "hybrid:1h,min-samples=3", "hybrid:2h,cv=12", "hybrid:1h,arima=off"]),
)
def test_each_rule_gives_the_window_the_scalar_policy_gives(idle, spec):
    policy = parse_policy(spec)
    assert isinstance(policy, HybridHistogram)
    idle_us = np.asarray(idle, dtype=np.int64)
    prewarm, unload, rule = policy.batch_decisions(idle_us)
    state = policy.new_state()
    for i in range(idle_us.size + 1):
        window = policy.decide(state)
        assert (prewarm[i], unload[i]) == (window.prewarm_us, window.unload_us)
        if RULES[rule[i]] in ("no history", "not representative"):
            assert (window.prewarm_us, window.unload_us) == (0, policy.range_us)
        if i < idle_us.size:
            policy.on_idle_time(state, int(idle_us[i]))
    assert (rule == RULES.index("no history")).sum() == min(policy.min_samples, idle_us.size + 1)


def test_rule_counts_cover_the_idle_periods_begun_after_the_warmup():
    # App 0 goes idle at 0, 30 and 35 min (still idle at the horizon); app 1 at 50 min.
    inv = make_invocations([[(0, 0), (30 * MIN, 0), (35 * MIN, 0)], [(50 * MIN, 0)]], 60 * MIN)
    policy = parse_policy("hybrid:1h,cv=0")
    assert isinstance(policy, HybridHistogram)
    everything = hybrid_rule_counts(inv, policy)
    assert sum(everything.decisions) == 4
    assert everything.decisions[RULES.index("no history")] == 2  # the first idle period of each app
    after = hybrid_rule_counts(inv, policy, warmup_us=32 * MIN)
    assert sum(after.decisions) == 2  # app 0 at 35 min, app 1 at 50 min
    assert after.apps == (1, 0, 0, 1)
