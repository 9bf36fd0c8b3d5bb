"""The synthetic Azure-like generator: calibration against the paper, determinism, validity, spec parsing."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from strato.errors import ConfigError
from strato.traces.faas.describe import PAPER, Characterisation, describe, idle_structure
from strato.traces.faas.model import Workload
from strato.traces.faas.synth import (
    TRIGGER_FUNCTION_SHARE,
    TRIGGERS,
    SynthConfig,
    app_rate_quantile_per_day,
    generate,
    parse_synth_spec,
)

SIZES_AND_SEEDS = [(500, 0), (500, 1), (2000, 0), (2000, 1)]


@cache
def _workload(n_apps: int, seed: int, minutes: int = 1440) -> Workload:
    return generate(SynthConfig(n_apps=n_apps, seed=seed, minutes=minutes))


@cache
def _described(n_apps: int, seed: int, minutes: int = 1440) -> Characterisation:
    return describe(_workload(n_apps, seed, minutes), seed=seed)


# ------------------------------------------------------------------------------------------ calibration


@pytest.mark.parametrize(
    ("figure", "tolerance"),
    [
        ("share_apps_at_most_hourly", 0.05),
        ("share_apps_at_most_per_minute", 0.05),
        ("share_invocations_top_apps", 0.01),
        ("share_apps_cv_above_1", 0.07),
        ("share_apps_single_function", 0.05),
        ("share_apps_at_most_10_functions", 0.03),
    ],
)
@pytest.mark.parametrize(("n_apps", "seed"), SIZES_AND_SEEDS)
def test_generator_reproduces_the_paper_figures(
    n_apps: int, seed: int, figure: str, tolerance: float
) -> None:
    measured = getattr(_described(n_apps, seed), figure)
    assert measured == pytest.approx(PAPER[figure], abs=tolerance), f"{figure} = {measured:.4f}"


@pytest.mark.parametrize(("n_apps", "seed"), SIZES_AND_SEEDS)
def test_timers_are_periodic_and_trigger_mix_matches(n_apps: int, seed: int) -> None:
    c = _described(n_apps, seed)
    assert c.median_cv_timer_apps < 0.1
    shares = {t.trigger: t.function_share for t in c.triggers}
    for trigger, expected in zip(TRIGGERS, TRIGGER_FUNCTION_SHARE, strict=True):
        assert shares.get(trigger, 0.0) == pytest.approx(expected, abs=0.02), trigger
    # Event and queue functions are few but busy, timers many but quiet (the paper's Table 2 shape).
    invocations = {t.trigger: t.invocation_share for t in c.triggers}
    assert invocations["event"] + invocations["queue"] > 0.3
    assert invocations["timer"] < 0.1


@pytest.mark.parametrize(("n_apps", "seed"), SIZES_AND_SEEDS)
def test_durations_and_memory_follow_the_published_fits(n_apps: int, seed: int) -> None:
    c = _described(n_apps, seed)
    assert c.median_function_duration_s == pytest.approx(PAPER["median_function_duration_s"], rel=0.1)
    assert c.app_memory_median_mb == pytest.approx(PAPER["app_memory_median_mb"], rel=0.05)
    assert c.app_memory_p90_mb == pytest.approx(PAPER["app_memory_p90_mb"], rel=0.1)
    w = _workload(n_apps, seed)
    log_mean_s = np.log(w.duration_mean_ms / 1000.0)
    assert float(np.mean(log_mean_s)) == pytest.approx(-0.38, abs=0.15)
    assert float(np.std(log_mean_s)) == pytest.approx(2.36, rel=0.1)


def test_trace_size_stays_bounded_by_the_cap() -> None:
    config = SynthConfig(n_apps=2000, seed=0)
    w = _workload(2000, 0)
    per_app = w.app_invocation_counts()
    # Tens of millions for a 46k-function day (about 15k apps), not billions.
    assert 1_000 < per_app.mean() < 10_000
    # Poisson noise only: a capped app cannot exceed the cap by much.
    assert per_app.max() <= 1.1 * config.rate_cap_per_min * config.minutes
    c = _described(2000, 0)
    assert c.rate_orders_of_magnitude > 5.0


def test_rate_quantile_function_hits_its_anchors() -> None:
    cap = 200.0
    q = app_rate_quantile_per_day(np.array([0.0, 0.81, 1.0]), cap)
    assert q[0] == pytest.approx(1e-2)
    assert q[1] == pytest.approx(1440.0)
    assert q[2] == pytest.approx(cap * 1440.0)
    u = np.linspace(0.0, 1.0, 10_001)
    rates = app_rate_quantile_per_day(u, cap)
    assert np.all(np.diff(rates) >= 0)
    # The expected rates span about eight orders of magnitude, as the paper's do.
    assert math.log10(rates[-1] / rates[0]) > 7.0


def test_shorter_trace_keeps_the_shares() -> None:
    c = _described(1000, 2, 720)
    assert c.duration_hours == 12.0
    assert c.share_apps_at_most_hourly == pytest.approx(0.45, abs=0.05)
    assert c.share_apps_at_most_per_minute == pytest.approx(0.81, abs=0.05)


# ----------------------------------------------------------------------------------- determinism, shape


def _assert_same(a: Workload, b: Workload) -> None:
    assert a.name == b.name
    for field in (
        "app_ids",
        "app_memory_mb",
        "function_ids",
        "function_app",
        "function_trigger",
        "duration_mean_ms",
        "duration_percentiles_ms",
        "minute_counts",
    ):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_same_seed_gives_identical_workload() -> None:
    _assert_same(generate(SynthConfig(n_apps=300, seed=5)), generate(SynthConfig(n_apps=300, seed=5)))


def test_different_seeds_differ() -> None:
    a, b = _workload(500, 0), _workload(500, 1)
    assert a.name != b.name
    assert a.minute_counts is not None and b.minute_counts is not None
    assert a.n_functions != b.n_functions or not np.array_equal(a.minute_counts, b.minute_counts)
    assert not np.array_equal(a.app_memory_mb, b.app_memory_mb)


@pytest.mark.parametrize(("n_apps", "seed"), [(500, 0), (2000, 1)])
def test_workload_is_well_formed(n_apps: int, seed: int) -> None:
    w = _workload(n_apps, seed)
    assert w.name == f"synthetic-{n_apps}apps-s{seed}"
    assert w.minute_counts is not None and w.events is None
    assert w.minute_counts.dtype == np.int64
    assert w.minute_counts.shape == (w.n_functions, 1440)
    assert (w.minute_counts >= 0).all()
    assert w.n_apps == n_apps
    assert np.all(np.diff(w.function_app) >= 0)
    assert np.bincount(w.function_app, minlength=n_apps).min() >= 1
    assert set(w.function_trigger.tolist()) <= set(TRIGGERS)
    assert len(set(w.function_ids.tolist())) == w.n_functions
    assert len(set(w.app_ids.tolist())) == n_apps
    assert np.all(np.diff(w.duration_percentiles_ms, axis=1) >= 0)
    assert (w.duration_mean_ms >= 1.0).all() and (w.duration_mean_ms <= 600_000.0).all()
    assert (w.app_memory_mb >= 64.0).all() and (w.app_memory_mb <= 1536.0).all()


def test_timer_functions_fire_on_a_fixed_period() -> None:
    w = _workload(500, 0)
    assert w.minute_counts is not None
    timers = np.flatnonzero(w.function_trigger == "timer")
    checked = 0
    for f in timers:
        minutes = np.flatnonzero(w.minute_counts[f])
        if minutes.size >= 3 and w.minute_counts[f].max() == 1:
            gaps = np.diff(minutes)
            # Whole-second periods land in whole minutes up to one minute of rounding.
            assert gaps.max() - gaps.min() <= 1, f"timer {w.function_ids[f]} gaps {set(gaps.tolist())}"
            checked += 1
    assert checked > 10


def test_small_and_edge_configs_generate() -> None:
    for config in (
        SynthConfig(n_apps=1),
        SynthConfig(n_apps=3, minutes=1),
        SynthConfig(n_apps=40, max_functions_per_app=1),
        SynthConfig(n_apps=40, bursty_fraction=1.0, minutes=30),
        SynthConfig(n_apps=40, bursty_fraction=0.0),
        SynthConfig(n_apps=40, rate_cap_per_min=0.01),
    ):
        w = generate(config)
        assert w.minute_counts is not None
        assert w.minute_counts.shape == (w.n_functions, config.minutes)
        assert np.bincount(w.function_app).max() <= config.max_functions_per_app
        inv = w.expand(seed=1)
        assert len(inv) == int(w.minute_counts.sum())


def test_expand_of_a_synthetic_workload_is_consistent() -> None:
    w = generate(SynthConfig(n_apps=60, seed=4))
    inv = w.expand(seed=0)
    assert len(inv) == int(w.invocation_counts().sum())
    assert np.all(np.diff(inv.app) >= 0)
    assert (inv.duration_us >= 0).all()


# ------------------------------------------------------------------------------------------ spec parsing


def test_plain_spec_gives_defaults() -> None:
    assert parse_synth_spec("synthetic") == SynthConfig()
    assert SynthConfig().name == "synthetic-500apps-s0"


def test_spec_with_keys() -> None:
    config = parse_synth_spec("synthetic:apps=2000,minutes=720,seed=3")
    assert config == SynthConfig(n_apps=2000, minutes=720, seed=3)
    assert config.name == "synthetic-2000apps-720min-s3"
    other = parse_synth_spec(" synthetic: rate_cap = 50.5 , bursty=0.25, max_functions=20 ")
    assert other == SynthConfig(rate_cap_per_min=50.5, bursty_fraction=0.25, max_functions_per_app=20)


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("synthetic:colour=red", "colour"),
        ("synthetic:apps=many", "apps"),
        ("synthetic:apps=2.5", "apps"),
        ("synthetic:apps=0", "apps"),
        ("synthetic:minutes=-5", "minutes"),
        ("synthetic:seed=-1", "seed"),
        ("synthetic:bursty=1.5", "bursty"),
        ("synthetic:rate_cap=0", "rate_cap"),
        ("synthetic:rate_cap=nan", "rate_cap"),
        ("synthetic:max_functions=0", "max_functions"),
        ("synthetic:apps=", "apps"),
        ("synthetic:apps", "apps"),
        ("synthetic:apps=10,apps=20", "apps"),
    ],
)
def test_bad_specs_name_the_key(spec: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        parse_synth_spec(spec)


@pytest.mark.parametrize("spec", ["synthetic:", "synthetic:apps=10,", "synth", "azure:apps=3", ""])
def test_malformed_specs_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_synth_spec(spec)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_apps": 0},
        {"n_apps": True},
        {"minutes": 0},
        {"seed": -3},
        {"rate_cap_per_min": -1.0},
        {"rate_cap_per_min": math.inf},
        {"bursty_fraction": 2.0},
        {"max_functions_per_app": 0},
    ],
)
def test_config_validates_its_fields(kwargs: dict[str, object]) -> None:
    (field,) = kwargs
    with pytest.raises(ConfigError, match=field):
        SynthConfig(**kwargs)  # type: ignore[arg-type]


def test_loader_builds_the_same_synthetic_workload() -> None:
    from strato.traces.faas.loader import load_workload

    _assert_same(load_workload("synthetic:apps=50,seed=2"), generate(SynthConfig(n_apps=50, seed=2)))


# ------------------------------------------------------------------------- per-app idle-time structure


@pytest.mark.parametrize(("n_apps", "seed"), [(2000, 0), (1000, 1)])
def test_idle_structure_sits_between_the_real_traces(n_apps: int, seed: int) -> None:
    # The references (strato traces idle, docs/keepalive.md): raw-format-100-8h and sampled/1350.
    s = idle_structure(_workload(n_apps, seed), seed=seed)
    assert 0.06 <= s.share_timer_like <= 0.38
    median, p75, p90 = 2, 3, 4
    assert 0.48 <= s.cv[median] <= 1.33
    assert s.cv[p90] <= 3.96
    # Most apps, even mostly periodic ones, have short idle times: the hybrid policy's head is under a
    # minute for the median app and about a minute for the 3rd-quartile one (gamma(3) gave 6 minutes).
    assert s.p5_min[median] < 1.0
    assert s.p5_min[p75] < 2.0
    assert 20.0 <= s.p99_min[median] <= 40.0


def test_scheduled_apps_are_periodic_and_the_knob_is_a_spec_key() -> None:
    none = idle_structure(generate(parse_synth_spec("synthetic:apps=400,minutes=480,scheduled=0,bursty=0")))
    all_ = idle_structure(generate(parse_synth_spec("synthetic:apps=400,minutes=480,scheduled=1,bursty=0")))
    assert all_.share_timer_like > none.share_timer_like + 0.1
    with pytest.raises(ConfigError, match="scheduled"):
        parse_synth_spec("synthetic:scheduled=1.5")
