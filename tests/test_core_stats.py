from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats as scipy_stats

from strato.core.stats import (
    ConfidenceInterval,
    confidence_interval,
    cv,
    ecdf,
    percentile,
    summary,
    top_share,
    weighted_percentile,
)
from strato.errors import ConfigError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = hnp.arrays(np.float64, st.integers(1, 60), elements=finite)
levels = st.floats(min_value=0, max_value=100)


# --- percentile -------------------------------------------------------------------------------------


def test_percentile_hand_computed() -> None:
    # Linear rule: position q/100 * (n - 1) in the sorted data.
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 25) == pytest.approx(1.75)
    assert percentile([10, 20, 30, 40, 50], 90) == pytest.approx(46.0)
    assert percentile([7], 99) == 7.0
    assert percentile([1, 2, 3], 0) == 1.0
    assert percentile([1, 2, 3], 100) == 3.0


def test_percentile_scalar_and_array_q() -> None:
    scalar = percentile([1, 2, 3, 4], 50)
    assert isinstance(scalar, float)
    many = percentile([1, 2, 3, 4], [0, 50, 100])
    assert isinstance(many, np.ndarray)
    np.testing.assert_allclose(many, [1.0, 2.5, 4.0])
    grid = percentile(np.arange(11), np.array([[10.0, 20.0], [30.0, 40.0]]))
    assert grid.shape == (2, 2)
    np.testing.assert_allclose(grid, [[1, 2], [3, 4]])


@given(samples, levels)
def test_percentile_matches_numpy(values: np.ndarray, q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-9)


def test_percentile_flattens_and_allows_infinity() -> None:
    assert percentile([[1, 2], [3, 4]], 50) == 2.5
    assert percentile([1, 2, math.inf], 0) == 1.0


@pytest.mark.parametrize("q", [-1, 100.5, math.nan, [50, 101]])
def test_percentile_rejects_bad_q(q: object) -> None:
    with pytest.raises(ConfigError, match="q must lie"):
        percentile([1, 2, 3], q)  # type: ignore[call-overload]


def test_percentile_rejects_empty_nan_and_text() -> None:
    with pytest.raises(ConfigError, match="empty"):
        percentile([], 50)
    with pytest.raises(ConfigError, match="NaN"):
        percentile([1.0, math.nan], 50)
    with pytest.raises(ConfigError, match="numbers"):
        percentile(["a", "b"], 50)


# --- ecdf -------------------------------------------------------------------------------------------


def test_ecdf_hand_computed_with_ties() -> None:
    x, y = ecdf([3, 1, 2, 2])
    np.testing.assert_array_equal(x, [1, 2, 3])
    np.testing.assert_allclose(y, [0.25, 0.75, 1.0])


def test_ecdf_empty() -> None:
    x, y = ecdf([])
    assert x.size == 0 and y.size == 0


@given(samples)
def test_ecdf_matches_scipy_and_is_a_cdf(values: np.ndarray) -> None:
    x, y = ecdf(values)
    reference = scipy_stats.ecdf(values).cdf
    np.testing.assert_array_equal(x, reference.quantiles)
    np.testing.assert_allclose(y, reference.probabilities)
    assert np.all(np.diff(x) > 0)
    assert np.all(np.diff(y) > 0)
    assert y[0] > 0 and y[-1] == 1.0
    # y is the fraction of values <= x, by definition.
    np.testing.assert_allclose(y, [(values <= v).mean() for v in x])


# --- weighted_percentile ----------------------------------------------------------------------------


def test_weighted_percentile_hand_computed() -> None:
    values = [1, 2, 3, 4]
    weights = [1, 1, 1, 7]  # cumulative 1, 2, 3, 10 of 10
    assert weighted_percentile(values, weights, 10) == 1.0
    assert weighted_percentile(values, weights, 10.01) == 2.0
    assert weighted_percentile(values, weights, 30) == 3.0
    assert weighted_percentile(values, weights, 31) == 4.0
    assert weighted_percentile(values, weights, 0) == 1.0
    assert weighted_percentile(values, weights, 100) == 4.0
    np.testing.assert_array_equal(weighted_percentile(values, weights, [10, 50, 100]), [1.0, 4.0, 4.0])


def test_weighted_percentile_ignores_zero_weights_and_scale() -> None:
    assert weighted_percentile([0, 5, 9], [0, 1, 1], 0) == 5.0
    assert weighted_percentile([1, 2, 3], [1, 2, 3], 40) == weighted_percentile([1, 2, 3], [10, 20, 30], 40)


@given(
    st.lists(st.tuples(st.integers(-50, 50), st.integers(0, 5)), min_size=1, max_size=30).filter(
        lambda pairs: sum(w for _, w in pairs) > 0
    ),
    st.integers(0, 100),
)
def test_weighted_percentile_integer_weights_are_repetition_counts(
    pairs: list[tuple[int, int]], q: int
) -> None:
    values = np.array([v for v, _ in pairs], dtype=float)
    weights = np.array([w for _, w in pairs])
    repeated = np.repeat(values, weights)
    expected = np.percentile(repeated, q, method="inverted_cdf")
    assert weighted_percentile(values, weights, q) == expected


@pytest.mark.skipif(
    int(np.__version__.split(".")[0]) < 2, reason="np.percentile(weights=...) needs numpy >= 2.0"
)
@given(
    samples.flatmap(
        lambda v: st.tuples(
            st.just(v),
            hnp.arrays(np.float64, v.shape, elements=st.floats(0.01, 100)),
        )
    ),
    levels,
)
def test_weighted_percentile_matches_numpy_weighted(pair: tuple[np.ndarray, np.ndarray], q: float) -> None:
    values, weights = pair
    expected = np.percentile(values, q, weights=weights, method="inverted_cdf")
    assert weighted_percentile(values, weights, q) == pytest.approx(float(expected))


def test_weighted_percentile_validates_weights() -> None:
    with pytest.raises(ConfigError, match="shape"):
        weighted_percentile([1, 2, 3], [1, 1], 50)
    with pytest.raises(ConfigError, match="non-negative"):
        weighted_percentile([1, 2], [1, -1], 50)
    with pytest.raises(ConfigError, match="non-negative"):
        weighted_percentile([1, 2], [1, math.inf], 50)
    with pytest.raises(ConfigError, match="all zero"):
        weighted_percentile([1, 2], [0, 0], 50)
    with pytest.raises(ConfigError, match="empty"):
        weighted_percentile([], [], 50)


# --- summary ----------------------------------------------------------------------------------------


def test_summary_hand_computed() -> None:
    result = summary(range(1, 101))  # 1..100
    assert list(result) == ["count", "mean", "p50", "p90", "p99", "min", "max"]
    assert result["count"] == 100 and isinstance(result["count"], int)
    assert result["mean"] == 50.5
    assert result["p50"] == pytest.approx(50.5)
    assert result["p90"] == pytest.approx(90.1)
    assert result["p99"] == pytest.approx(99.01)
    assert result["min"] == 1.0 and result["max"] == 100.0


def test_summary_of_empty_is_nan_not_error() -> None:
    result = summary([])
    assert result["count"] == 0
    assert all(math.isnan(value) for key, value in result.items() if key != "count")


# --- cv ---------------------------------------------------------------------------------------------


def test_cv_hand_computed() -> None:
    # mean 5, population std 2.
    assert cv([2, 4, 4, 4, 5, 5, 7, 9]) == pytest.approx(0.4)
    assert cv([3, 3, 3]) == 0.0
    assert math.isnan(cv([-1, 1]))
    with pytest.raises(ConfigError):
        cv([])


@given(samples.filter(lambda v: abs(v.mean()) > 1e-3))
def test_cv_matches_scipy_variation(values: np.ndarray) -> None:
    assert cv(values) == pytest.approx(float(scipy_stats.variation(values)), rel=1e-9, abs=1e-12)


# --- confidence_interval ----------------------------------------------------------------------------


def test_confidence_interval_hand_computed() -> None:
    # n = 4, mean 2.5, s = sqrt(5/3), t_{0.975, 3} = 3.182446305284263.
    interval = confidence_interval([1, 2, 3, 4])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert isinstance(interval, ConfidenceInterval)
    mean, low, high = interval
    assert mean == 2.5
    assert low == pytest.approx(2.5 - half)
    assert high == pytest.approx(2.5 + half)
    assert interval.half_width == pytest.approx(half)


@given(samples.filter(lambda v: v.size >= 2 and np.ptp(v) > 1e-6), st.floats(0.5, 0.999))
def test_confidence_interval_matches_scipy(values: np.ndarray, level: float) -> None:
    low, high = scipy_stats.t.interval(
        level, values.size - 1, loc=values.mean(), scale=scipy_stats.sem(values)
    )
    interval = confidence_interval(values, level)
    assert interval.low == pytest.approx(low, rel=1e-9, abs=1e-9)
    assert interval.high == pytest.approx(high, rel=1e-9, abs=1e-9)


def test_confidence_interval_edge_cases() -> None:
    single = confidence_interval([4.0])
    assert single.mean == 4.0 and math.isnan(single.low) and math.isnan(single.high)
    constant = confidence_interval([2.0, 2.0, 2.0])
    assert constant == (2.0, 2.0, 2.0)
    assert confidence_interval([1, 2, 3], 0.99).half_width > confidence_interval([1, 2, 3], 0.9).half_width
    for level in (0, 1, 95, -0.5):
        with pytest.raises(ConfigError, match="confidence level"):
            confidence_interval([1, 2, 3], level)
    with pytest.raises(ConfigError):
        confidence_interval([])


# --- top_share --------------------------------------------------------------------------------------


def test_top_share_hand_computed() -> None:
    values = [1, 1, 2, 6]  # total 10; descending 6, 2, 1, 1
    assert top_share(values, 0.25) == pytest.approx(0.6)
    assert top_share(values, 0.5) == pytest.approx(0.8)
    assert top_share(values, 0.125) == pytest.approx(0.3)  # half of the top item
    assert top_share(values, 0.0) == 0.0
    assert top_share(values, 1.0) == 1.0
    np.testing.assert_allclose(top_share(values, [0.25, 0.75]), [0.6, 0.9])


def test_top_share_skewed_popularity() -> None:
    # 186 of 1000 apps produce almost everything: the shape of the Azure Functions finding.
    invocations = np.concatenate([np.full(186, 1000.0), np.full(814, 1.0)])
    assert top_share(invocations, 0.186) == pytest.approx(186_000 / 186_814)


@given(
    hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1e6)),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_top_share_is_monotone_and_bounded(values: np.ndarray, a: float, b: float) -> None:
    if values.sum() == 0:
        assert math.isnan(top_share(values, a))
        return
    low, high = sorted((a, b))
    share_low, share_high = top_share(values, low), top_share(values, high)
    assert 0.0 <= share_low <= share_high + 1e-12 <= 1.0 + 1e-12
    # The top items produce at least their proportional share.
    assert share_low >= low - 1e-9


def test_top_share_validates() -> None:
    with pytest.raises(ConfigError, match="non-negative"):
        top_share([1, -1], 0.5)
    with pytest.raises(ConfigError, match="fraction must lie"):
        top_share([1, 2], 1.5)
    with pytest.raises(ConfigError, match="fraction must lie"):
        top_share([1, 2], 18.6)
    with pytest.raises(ConfigError, match="empty"):
        top_share([], 0.5)
