"""describe(): the paper's figures on hand-made workloads with known answers, and on the real sampled day."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from data_helpers import shared_data
from strato.traces.faas.describe import (
    IDLE_QUANTILES,
    MIN_INTERARRIVALS,
    PAPER,
    TOP_APPS_FRACTION,
    _interarrival_cv,
    describe,
    format_characterisation,
    format_idle_structures,
    idle_structure,
)
from strato.traces.faas.model import DURATION_PERCENTILES, Workload
from strato.traces.faas.synth import SynthConfig, generate

SHARED_DATA = shared_data()
SAMPLED_1350 = SHARED_DATA / "azure-functions-2019" / "sampled" / "1350_inv.csv"


def _workload(
    function_app: list[int],
    triggers: list[str],
    *,
    memory: list[float],
    minute_counts: np.ndarray | None = None,
    events: tuple[list[int], list[float]] | None = None,
    mean_ms: list[float] | None = None,
) -> Workload:
    n_functions = len(function_app)
    means = np.asarray(mean_ms if mean_ms is not None else [100.0] * n_functions, dtype=np.float64)
    event_arrays = None
    if events is not None:
        function, start = events
        event_arrays = (
            np.asarray(function, dtype=np.int64),
            np.asarray(start, dtype=np.float64),
            np.full(len(function), 0.1),
        )
    return Workload(
        name="hand-made",
        app_ids=np.asarray([f"a{i}" for i in range(len(memory))], dtype=np.str_),
        app_memory_mb=np.asarray(memory, dtype=np.float64),
        function_ids=np.asarray([f"f{i}" for i in range(n_functions)], dtype=np.str_),
        function_app=np.asarray(function_app, dtype=np.int64),
        function_trigger=np.asarray(triggers, dtype=np.str_),
        duration_mean_ms=means,
        duration_percentiles_ms=np.repeat(means[:, None], len(DURATION_PERCENTILES), axis=1),
        minute_counts=minute_counts,
        events=event_arrays,
    )


def _four_apps() -> Workload:
    """app0: never invoked; app1: a timer firing hourly (24); app2: two functions, 1440 in all;
    app3: twelve functions, 10,000 in all."""
    function_app = [0, 1, 2, 2] + [3] * 12
    triggers = ["http", "timer", "http", "queue"] + ["event"] * 2 + ["http"] * 10
    counts = np.zeros((16, 1440), dtype=np.int64)
    counts[1, ::60] = 1
    counts[2, 720:] = 1  # app2 is invoked once a minute: function 3 in the first half, 2 in the second
    counts[3, :720] = 1
    counts[4, :] = 5  # app3: 7,200 + 2,800
    counts[5, :1400] = 2
    return _workload(
        function_app,
        triggers,
        memory=[100.0, 200.0, 300.0, 400.0],
        minute_counts=counts,
        mean_ms=[500.0, 2000.0, 100.0, 300.0] + [1000.0] * 12,
    )


def test_rates_functions_and_shares_on_four_apps() -> None:
    c = describe(_four_apps())
    counts = np.array([0, 24, 1440, 10_000])
    assert (c.n_apps, c.n_functions, c.n_apps_invoked) == (4, 16, 3)
    assert c.invocations == counts.sum()
    assert c.duration_hours == 24.0
    # 24 a day is exactly once an hour, 1440 exactly once a minute: both count as "at most".
    assert c.share_apps_at_most_hourly == 0.5
    assert c.share_apps_at_most_per_minute == 0.75
    # 18.6 % of 4 apps is 0.744 of the busiest one.
    assert c.share_invocations_top_apps == pytest.approx(4 * TOP_APPS_FRACTION * 10_000 / counts.sum())
    assert c.rate_orders_of_magnitude == pytest.approx(math.log10(10_000 / 24))
    assert c.share_apps_single_function == 0.5
    assert c.share_apps_at_most_10_functions == 0.75
    assert c.median_function_duration_s == 1.0
    assert c.app_memory_median_mb == 250.0
    assert c.app_memory_p90_mb == pytest.approx(370.0)


def test_trigger_shares_on_four_apps() -> None:
    c = describe(_four_apps())
    total = 11_464
    expected = {
        "http": (12 / 16, 720 / total),
        "queue": (1 / 16, 720 / total),
        "event": (2 / 16, 10_000 / total),
        "timer": (1 / 16, 24 / total),
    }
    assert [t.trigger for t in c.triggers] == ["http", "queue", "event", "timer"]
    for t in c.triggers:
        assert (t.function_share, t.invocation_share) == pytest.approx(expected[t.trigger])


def test_periodic_timer_has_small_cv_after_minute_spreading() -> None:
    c = describe(_four_apps(), seed=3)
    # Hourly firings spread inside their minute: gaps of 3600 s +- 60 s.
    assert 0.0 < c.median_cv_timer_apps < 60.0 / 3600.0
    assert c.n_apps_with_cv == 3


def _iat_workload() -> Workload:
    """Exact event times: a periodic timer app, one app with too few IATs, one regular, one bursty."""
    periodic = [10.0 * k for k in range(100)]
    too_few = [5.0, 50.0, 500.0]
    just_enough = [0.0, 4.0, 10.0, 15.0]  # 3 IATs: 4, 6, 5
    alternating = np.cumsum([0.0] + [1.0, 9.0] * 20).tolist()  # IATs 1, 9, ...: mean 5, std 4
    bursty = np.cumsum([0.0] + [1.0, 1.0, 1.0, 97.0] * 10).tolist()  # mean 25, std sqrt(1728)
    function = [0] * 100 + [1] * 3 + [2] * 4 + [3] * 41 + [4] * 41
    start = periodic + too_few + just_enough + alternating + bursty
    return _workload(
        [0, 1, 2, 3, 4],
        ["timer", "http", "http", "queue", "event"],
        memory=[128.0] * 5,
        events=(function, start),
    )


def test_cv_on_exact_event_times() -> None:
    w = _iat_workload()
    cv, has_cv = _interarrival_cv(w, w.app_invocation_counts(), 0)
    assert has_cv.tolist() == [True, False, True, True, True]
    assert cv[0] == 0.0  # exactly periodic
    assert math.isnan(cv[1])
    assert cv[2] == pytest.approx(np.std([4.0, 6.0, 5.0]) / 5.0)
    assert cv[3] == pytest.approx(0.8)
    assert cv[4] == pytest.approx(math.sqrt(1728.0) / 25.0)
    c = describe(w)
    assert MIN_INTERARRIVALS == 3
    assert c.n_apps_with_cv == 4
    assert c.share_apps_cv_above_1 == 0.25
    assert c.median_cv_timer_apps == 0.0


def _cv_from_expand(w: Workload, seed: int) -> np.ndarray:
    inv = w.expand(seed=seed, durations="mean")
    bounds = inv.app_bounds()
    cv = np.full(w.n_apps, np.nan)
    for a in range(w.n_apps):
        gaps = np.diff(inv.arrival_us[bounds[a] : bounds[a + 1]]).astype(np.float64)
        if gaps.size >= MIN_INTERARRIVALS and gaps.mean() > 0:
            cv[a] = gaps.std() / gaps.mean()
    return cv


@pytest.mark.parametrize("seed", [0, 7])
def test_cv_matches_the_arrivals_of_expand(seed: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(0.3, 2.0, size=(30, 1))[:, [0] * 200] * rng.random((30, 200)))
    function_app = np.sort(rng.integers(0, 9, size=30)).tolist()
    memory = [128.0] * (max(function_app) + 1)
    hand = _workload(function_app, ["http"] * 30, memory=memory, minute_counts=counts.astype(np.int64))
    for w in (hand, generate(SynthConfig(n_apps=40, seed=seed, minutes=240))):
        cv, has_cv = _interarrival_cv(w, w.app_invocation_counts(), seed)
        expected = _cv_from_expand(w, seed)
        np.testing.assert_array_equal(has_cv, ~np.isnan(expected))
        np.testing.assert_allclose(cv[has_cv], expected[has_cv], rtol=1e-9)


def test_to_dict_and_text_table() -> None:
    c = describe(generate(SynthConfig(n_apps=200, seed=1)))
    data = c.to_dict()
    assert data["n_apps"] == 200
    assert isinstance(data["triggers"], dict)
    assert set(data["triggers"]) >= {"http", "timer"}
    json.dumps(data)
    text = format_characterisation(c)
    for paper_value in ("45 %", "81 %", "99.6 %", "40 %", "54 %", "95 %"):
        assert paper_value in text
    assert f"{100 * c.share_apps_at_most_hourly:.1f} %" in text
    assert c.name in text


def test_empty_workload_gives_nans_not_errors() -> None:
    w = _workload([0], ["http"], memory=[128.0], minute_counts=np.zeros((1, 60), dtype=np.int64))
    c = describe(w)
    assert c.invocations == 0 and c.n_apps_invoked == 0 and c.n_apps_with_cv == 0
    assert math.isnan(c.share_invocations_top_apps)
    assert math.isnan(c.share_apps_cv_above_1)
    assert "n/a" in format_characterisation(c)


def test_paper_reference_values() -> None:
    assert PAPER["median_function_duration_s"] == pytest.approx(0.684, abs=1e-3)
    # The Burr XII fit's median and p90 (the paper quotes 170 / 400 MB for the apps' maxima).
    assert 120 < PAPER["app_memory_median_mb"] < PAPER["app_memory_p90_mb"] < 400


# ------------------------------------------------------------------------------------------- real data


def _minimal_counts(path: Path) -> np.ndarray:
    with path.open() as handle:
        header = handle.readline().strip().split(",")
    first = next(i for i, name in enumerate(header) if name.startswith("minute_"))
    counts: np.ndarray = np.loadtxt(
        path, delimiter=",", skiprows=1, usecols=range(first, len(header)), dtype=np.int64, ndmin=2
    )
    return counts


@pytest.mark.shared_data
@pytest.mark.skipif(not SAMPLED_1350.exists(), reason=f"real Azure 2019 sample not found at {SAMPLED_1350}")
def test_describe_on_the_real_sampled_day() -> None:
    from strato.traces.faas.azure2019 import read_azure2019

    w = read_azure2019(SAMPLED_1350.parent / "1350")
    c = describe(w)
    # Cross-check against an independent minimal parse (every function is its own app in the sample).
    counts = _minimal_counts(SAMPLED_1350)
    per_app = counts.sum(axis=1)
    assert (c.n_apps, c.n_functions) == (counts.shape[0], counts.shape[0])
    assert c.invocations == per_app.sum()
    assert c.duration_hours == counts.shape[1] / 60
    assert c.share_apps_at_most_hourly == pytest.approx(np.mean(per_app <= counts.shape[1] / 60))
    assert c.share_apps_at_most_per_minute == pytest.approx(np.mean(per_app <= counts.shape[1]))
    descending = np.sort(per_app)[::-1]
    k = TOP_APPS_FRACTION * per_app.size
    top = descending[: int(k)].sum() + (k - int(k)) * descending[int(k)]
    assert c.share_invocations_top_apps == pytest.approx(top / per_app.sum())
    assert c.share_apps_single_function == 1.0
    assert 0.0 < c.share_apps_cv_above_1 < 1.0
    assert c.n_apps_with_cv == int(np.sum(per_app >= MIN_INTERARRIVALS + 1))


# ------------------------------------------------------------------------------------ idle structure


def test_idle_structure_tells_a_timer_from_a_poisson_app_and_reads_p5_and_p99():
    rng = np.random.default_rng(3)
    periodic = [300.0 * k for k in range(40)]  # every 5 min: 39 idle times of 5 min less 0.1 s
    poisson = list(np.cumsum(rng.exponential(120.0, size=60)))
    rare = [0.0, 600.0, 1200.0]  # too few idle times to count
    starts = periodic + poisson + rare
    functions = [0] * len(periodic) + [1] * len(poisson) + [2] * len(rare)
    order = np.argsort(starts, kind="stable")
    workload = _workload(
        [0, 1, 2],
        ["timer", "http", "http"],
        memory=[128.0, 128.0, 128.0],
        events=([functions[i] for i in order], [starts[i] for i in order]),
    )
    structure = idle_structure(workload)
    assert structure.n_apps == 3 and structure.n_apps_measured == 2
    assert structure.share_timer_like == 0.5
    gaps_min = (np.diff(poisson) - 0.1) / 60.0
    poisson_cv = float(np.std(gaps_min) / np.mean(gaps_min))
    # Two apps: every quantile over apps interpolates between the periodic app (CV ~0) and the Poisson one.
    assert structure.cv[0] == pytest.approx(0.1 * poisson_cv, abs=1e-6)
    assert structure.cv[-1] == pytest.approx(0.9 * poisson_cv, abs=1e-6)
    p99 = float(np.percentile(gaps_min, 99.0))
    assert max(structure.p99_min) == pytest.approx(p99 - 0.1 * (p99 - (300.0 - 0.1) / 60.0), abs=1e-6)
    assert json.loads(json.dumps(structure.to_dict()))["quantiles"] == list(IDLE_QUANTILES)
    table = format_idle_structures([structure, structure])
    assert table.count("hand-made") == 2 and "timer-like apps" in table


def test_idle_structure_of_a_workload_without_idle_times_is_nan_not_an_error():
    workload = _workload([0], ["http"], memory=[128.0], events=([0], [5.0]))
    structure = idle_structure(workload)
    assert structure.n_apps_measured == 0
    assert all(math.isnan(x) for x in structure.cv) and math.isnan(structure.share_timer_like)
    assert "n/a" in format_idle_structures([structure])
