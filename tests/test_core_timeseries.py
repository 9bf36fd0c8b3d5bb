"""Tests for the small ARIMA and the robust one-step forecast used by the hybrid keep-alive policy.

Coefficient recovery uses seeded simulations of n = 2000 points. The tolerance for AR and MA
coefficients is 0.05, about three standard errors at that length (the standard error of an AR(1)
coefficient is sqrt((1 - phi^2) / n) ~ 0.018), so the tests check the estimator, not the seed.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import lfilter

from strato.core.timeseries import (
    ARIMA,
    FALLBACK_WINDOW,
    default_min_points,
    min_fit_length,
    predict_next,
)
from strato.errors import ConfigError

COEF_TOL = 0.05
N = 2000


def simulate_arma(
    ar: list[float], ma: list[float], *, n: int = N, mean: float = 0.0, seed: int = 0
) -> npt.NDArray[np.float64]:
    """ARMA sample with unit innovation variance; the burn-in forgets the zero start."""
    burn = 500
    noise = np.random.default_rng(seed).standard_normal(n + burn)
    x = lfilter(np.r_[1.0, ma], np.r_[1.0, -np.asarray(ar, dtype=float)], noise)
    return np.asarray(x[burn:], dtype=np.float64) + mean


# --- coefficient recovery -------------------------------------------------------------------------


def test_recovers_ar1() -> None:
    y = simulate_arma([0.6], [], mean=3.0, seed=1)
    model = ARIMA((1, 0, 0)).fit(y)
    assert model.ar_ == pytest.approx([0.6], abs=COEF_TOL)
    assert model.ma_.shape == (0,)
    assert model.intercept_ / (1 - model.ar_[0]) == pytest.approx(3.0, abs=0.2)
    assert model.sigma2_ == pytest.approx(1.0, rel=0.1)


def test_recovers_ar2() -> None:
    y = simulate_arma([0.5, -0.3], [], mean=-2.0, seed=2)
    model = ARIMA((2, 0, 0)).fit(y)
    assert model.ar_ == pytest.approx([0.5, -0.3], abs=COEF_TOL)
    assert model.intercept_ / (1 - model.ar_.sum()) == pytest.approx(-2.0, abs=0.2)
    assert model.sigma2_ == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("theta", [0.5, -0.6])
def test_recovers_ma1(theta: float) -> None:
    y = simulate_arma([], [theta], mean=10.0, seed=3)
    model = ARIMA((0, 0, 1)).fit(y)
    assert model.ma_ == pytest.approx([theta], abs=COEF_TOL)
    assert model.intercept_ == pytest.approx(10.0, abs=0.2)
    assert model.sigma2_ == pytest.approx(1.0, rel=0.1)


def test_recovers_arma11() -> None:
    y = simulate_arma([0.7], [0.3], mean=1.0, seed=4)
    model = ARIMA((1, 0, 1)).fit(y)
    assert model.ar_ == pytest.approx([0.7], abs=COEF_TOL)
    assert model.ma_ == pytest.approx([0.3], abs=COEF_TOL)
    assert model.intercept_ / (1 - model.ar_[0]) == pytest.approx(1.0, abs=0.3)
    assert model.sigma2_ == pytest.approx(1.0, rel=0.1)


def test_recovers_arima110() -> None:
    y = 100.0 + np.cumsum(simulate_arma([0.5], [], seed=5))
    model = ARIMA((1, 1, 0)).fit(y)
    assert model.ar_ == pytest.approx([0.5], abs=COEF_TOL)
    assert model.intercept_ == pytest.approx(0.0, abs=0.1)  # no drift was simulated
    assert model.sigma2_ == pytest.approx(1.0, rel=0.1)


def test_fitted_ma_is_invertible_and_ar_stationary() -> None:
    # Over-differenced white noise has a true MA root on the unit circle; the fit must stay inside.
    y = np.cumsum(np.random.default_rng(6).standard_normal(300))
    model = ARIMA((1, 2, 1)).fit(y)
    assert abs(model.ar_[0]) < 1
    assert abs(model.ma_[0]) < 1


def test_forecast_follows_the_ar_recursion() -> None:
    y = simulate_arma([0.6], [], mean=3.0, seed=7)
    model = ARIMA((1, 0, 0)).fit(y)
    expected = model.intercept_ + model.ar_[0] * y[-1]
    steps = model.forecast(3)
    assert steps[0] == pytest.approx(expected, rel=1e-12)
    assert steps[1] == pytest.approx(model.intercept_ + model.ar_[0] * steps[0], rel=1e-12)
    # Far ahead, a stationary AR forecast reverts to its mean.
    assert model.forecast(200)[-1] == pytest.approx(model.intercept_ / (1 - model.ar_[0]), rel=1e-9)


# --- constant, periodic and trending series -------------------------------------------------------


@pytest.mark.parametrize(
    "order", [(0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (2, 2, 1)]
)
@pytest.mark.parametrize("value", [0.0, 7.0, 600.0, 1e-300, 1e300])
def test_constant_series_forecasts_the_constant(order: tuple[int, int, int], value: float) -> None:
    y = np.full(30, value)
    assert ARIMA(order).fit(y).forecast(3).tolist() == [value] * 3
    assert predict_next(y, order) == value


def test_constant_series_has_zero_coefficients_and_variance() -> None:
    model = ARIMA((1, 0, 1)).fit([42.0] * 20)
    assert model.ar_.tolist() == [0.0]
    assert model.ma_.tolist() == [0.0]
    assert model.intercept_ == 42.0
    assert model.sigma2_ == 0.0


def test_period_two_series_is_continued() -> None:
    y = np.array([10.0, 30.0] * 10)
    assert ARIMA((1, 0, 0)).fit(y).forecast(4) == pytest.approx([10.0, 30.0, 10.0, 30.0], rel=1e-9)


def test_period_three_series_is_continued() -> None:
    y = np.array([5.0, 60.0, 20.0] * 8)
    assert ARIMA((2, 0, 0)).fit(y).forecast(3) == pytest.approx([5.0, 60.0, 20.0], rel=1e-9)


def test_linear_trend_with_d1_extrapolates() -> None:
    y = 3.0 + 0.1 * np.arange(40)
    forecast = ARIMA((1, 1, 0)).fit(y).forecast(3)
    assert forecast == pytest.approx(3.0 + 0.1 * np.arange(40, 43), rel=1e-9)


def test_quadratic_trend_with_d2_extrapolates() -> None:
    t = np.arange(30, dtype=float)
    forecast = ARIMA((0, 2, 1)).fit(1.0 + 2.0 * t + 0.5 * t**2).forecast(2)
    t_next = np.arange(30, 32, dtype=float)
    assert forecast == pytest.approx(1.0 + 2.0 * t_next + 0.5 * t_next**2, rel=1e-9)


def test_noisy_linear_trend_with_d1_keeps_the_slope() -> None:
    rng = np.random.default_rng(8)
    y = 50.0 + 2.0 * np.arange(200) + rng.normal(0.0, 1.0, 200)
    forecast = ARIMA((1, 1, 0)).fit(y).forecast(10)
    assert np.diff(forecast).mean() == pytest.approx(2.0, abs=0.1)


def test_without_mean_the_intercept_is_zero() -> None:
    y = simulate_arma([0.6], [0.2], mean=0.0, seed=9)
    model = ARIMA((1, 0, 1), include_mean=False).fit(y)
    assert model.intercept_ == 0.0
    assert model.ar_ == pytest.approx([0.6], abs=COEF_TOL)
    assert model.ma_ == pytest.approx([0.2], abs=COEF_TOL)


def test_scale_invariance() -> None:
    # Idle times come in seconds or minutes; the fit must not depend on the unit.
    y = np.abs(simulate_arma([0.5], [0.3], n=80, mean=5.0, seed=10))
    small, large = ARIMA((1, 1, 1)).fit(y), ARIMA((1, 1, 1)).fit(y * 3600.0)
    assert large.ar_ == pytest.approx(small.ar_, abs=1e-6)
    assert large.ma_ == pytest.approx(small.ma_, abs=1e-6)
    assert large.forecast(2) == pytest.approx(small.forecast(2) * 3600.0, rel=1e-6)


# --- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [(1, 0, 0), (2, 0, 1), (1, 1, 1), (0, 1, 2)])
def test_fits_are_bit_identical(order: tuple[int, int, int]) -> None:
    y = np.abs(simulate_arma([0.4], [0.3], n=50, mean=20.0, seed=11))
    first, second = ARIMA(order).fit(y), ARIMA(order).fit(y.copy())
    assert first.ar_.tobytes() == second.ar_.tobytes()
    assert first.ma_.tobytes() == second.ma_.tobytes()
    assert first.intercept_.hex() == second.intercept_.hex()
    assert first.sigma2_.hex() == second.sigma2_.hex()
    assert first.forecast(5).tobytes() == second.forecast(5).tobytes()
    assert predict_next(y, order).hex() == predict_next(list(y), order).hex()


def test_refit_does_not_depend_on_the_previous_fit() -> None:
    a = np.abs(simulate_arma([0.4], [], n=50, mean=20.0, seed=12))
    b = np.abs(simulate_arma([-0.4], [0.5], n=50, mean=20.0, seed=13))
    reused = ARIMA((1, 0, 1)).fit(a).fit(b)
    fresh = ARIMA((1, 0, 1)).fit(b)
    assert reused.forecast(3).tobytes() == fresh.forecast(3).tobytes()


# --- predict_next fallbacks and clipping ----------------------------------------------------------


def test_empty_series_predicts_zero() -> None:
    assert predict_next([]) == 0.0


@pytest.mark.parametrize("series", [[5.0], [10.0, 20.0, 30.0], [1.0, 2.0, 3.0, 4.0, 100.0]])
def test_short_series_fall_back_to_the_recent_mean(series: list[float]) -> None:
    assert len(series) < default_min_points((1, 0, 0))
    assert predict_next(series) == pytest.approx(np.mean(series[-FALLBACK_WINDOW:]))


def test_fallback_uses_only_the_last_points() -> None:
    series = [1000.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert predict_next(series, (2, 1, 2)) == pytest.approx(np.mean(series[-FALLBACK_WINDOW:]))


def test_min_points_threshold() -> None:
    series = [10.0, 12.0, 9.0, 11.0, 13.0, 8.0, 12.0]
    fallback = float(np.mean(series[-FALLBACK_WINDOW:]))
    fitted = float(ARIMA((1, 0, 0)).fit(series).forecast(1)[0])
    assert fitted != pytest.approx(fallback)
    assert predict_next(series, min_points=8) == pytest.approx(fallback)
    assert predict_next(series, min_points=7) == pytest.approx(fitted)
    # A threshold below what the fit needs is raised to it rather than causing an error.
    assert predict_next(series[:3], min_points=1) == pytest.approx(np.mean(series[:3]))


def test_default_min_points_rule() -> None:
    assert default_min_points((1, 0, 0)) == 6
    assert default_min_points((1, 1, 1)) == 10
    assert default_min_points((0, 0, 0)) == 3
    assert min_fit_length((1, 0, 0)) == 4
    assert min_fit_length((1, 1, 1)) == 6
    assert min_fit_length((1, 0, 0), include_mean=False) == 3


def test_forecast_is_clipped_below_at_half_the_minimum() -> None:
    # A falling ramp extrapolates to 0, but idle times never seen below 10 should not be predicted at 0.
    assert predict_next([60.0, 50.0, 40.0, 30.0, 20.0, 10.0], (0, 1, 0)) == 5.0


def test_forecast_is_clipped_above_at_twice_the_maximum() -> None:
    series = [0.0] * 7 + [10.0]
    assert float(ARIMA((0, 2, 0)).fit(series).forecast(1)[0]) > 20.0
    assert predict_next(series, (0, 2, 0)) == 20.0


def test_negative_values_never_give_a_negative_prediction() -> None:
    assert predict_next([-5.0, -3.0, -4.0, -6.0, -2.0, -5.0, -4.0]) == 0.0


def test_a_series_of_the_largest_float_stays_finite() -> None:
    for order in [(1, 0, 0), (0, 1, 0), (2, 1, 2)]:
        assert predict_next([1.7976931348623157e308] * 3, order) == 1.7976931348623157e308


def test_huge_values_fall_back_instead_of_overflowing() -> None:
    series = [1.7e308, 0.0, 1.7e308, 0.0, 1.7e308, 0.0, 1.7e308, 0.0, 1.7e308, 0.0]
    value = predict_next(series, (1, 2, 1))
    assert math.isfinite(value)
    assert 0.0 <= value <= 1.7e308


@settings(max_examples=300, deadline=None)
@given(
    series=st.lists(st.floats(min_value=0.0, allow_nan=False, allow_infinity=False), max_size=60),
    order=st.sampled_from([(1, 0, 0), (0, 0, 1), (1, 0, 1), (2, 0, 0), (0, 1, 0), (1, 1, 1), (2, 1, 2)]),
)
def test_predict_next_is_finite_non_negative_and_in_band(
    series: list[float], order: tuple[int, int, int]
) -> None:
    value = predict_next(series, order)
    assert isinstance(value, float)
    assert math.isfinite(value)
    assert value >= 0.0
    if series:
        assert value >= 0.5 * min(series)
        assert value <= 2.0 * max(series)


@settings(max_examples=100, deadline=None)
@given(
    series=st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), min_size=6, max_size=60),
)
def test_predict_next_is_deterministic(series: list[float]) -> None:
    assert predict_next(series, (1, 1, 1)).hex() == predict_next(series, (1, 1, 1)).hex()


# --- argument validation --------------------------------------------------------------------------


@pytest.mark.parametrize("order", [(-1, 0, 0), (0, -1, 0), (0, 0, -2)])
def test_negative_orders_are_rejected(order: tuple[int, int, int]) -> None:
    with pytest.raises(ConfigError, match="must be >= 0"):
        ARIMA(order)
    with pytest.raises(ConfigError, match="must be >= 0"):
        predict_next([1.0, 2.0], order)


@pytest.mark.parametrize("order", [(1, 0), (1, 0, 0, 0), 3, (1.5, 0, 0), (True, 0, 0), ("1", 0, 0)])
def test_malformed_orders_are_rejected(order: object) -> None:
    with pytest.raises(ConfigError, match="ARIMA order"):
        ARIMA(order)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected(bad: float) -> None:
    series = [1.0, 2.0, 3.0, bad, 5.0, 6.0, 7.0]
    with pytest.raises(ConfigError, match=r"non-finite value .* at index 3"):
        ARIMA((1, 0, 0)).fit(series)
    with pytest.raises(ConfigError, match="non-finite"):
        predict_next(series)


def test_non_numeric_and_multidimensional_series_are_rejected() -> None:
    with pytest.raises(ConfigError, match="as numbers"):
        ARIMA().fit(["a", "b", "c", "d", "e"])
    with pytest.raises(ConfigError, match="one-dimensional"):
        ARIMA().fit(np.ones((5, 2)))


def test_too_short_for_fit_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"needs at least 6 points to fit, got 5"):
        ARIMA((1, 1, 1)).fit([1.0, 2.0, 3.0, 4.0, 5.0])


def test_forecast_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="before fit"):
        ARIMA().forecast()
    model = ARIMA().fit([1.0, 3.0, 2.0, 4.0, 3.0, 5.0])
    for steps in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="positive integer"):
            model.forecast(steps)  # type: ignore[arg-type]


@pytest.mark.parametrize("min_points", [0, -3, 2.5, True])
def test_min_points_is_checked(min_points: object) -> None:
    with pytest.raises(ConfigError, match="min_points"):
        predict_next([1.0, 2.0, 3.0], min_points=min_points)  # type: ignore[arg-type]


# --- comparison with statsmodels (only where it is installed) --------------------------------------


def test_ar_matches_statsmodels_autoreg() -> None:
    ar_model = pytest.importorskip("statsmodels.tsa.ar_model")
    y = simulate_arma([0.5, -0.3], [], mean=4.0, seed=14)
    ours = ARIMA((2, 0, 0)).fit(y)
    theirs = ar_model.AutoReg(y, lags=2, trend="c").fit()
    # Both are the same least-squares problem, so they agree to rounding.
    assert ours.intercept_ == pytest.approx(theirs.params[0], rel=1e-8)
    assert ours.ar_ == pytest.approx(theirs.params[1:], rel=1e-8)
    assert ours.sigma2_ == pytest.approx(theirs.sigma2, rel=1e-8)
    assert ours.forecast(5) == pytest.approx(theirs.forecast(5), rel=1e-8)


@pytest.mark.parametrize(
    ("order", "ar", "ma"),
    [((1, 0, 1), [0.7], [-0.4]), ((0, 0, 1), [], [0.5]), ((1, 1, 1), [0.5], [0.3])],
)
def test_arma_is_close_to_statsmodels_mle(
    order: tuple[int, int, int], ar: list[float], ma: list[float]
) -> None:
    arima_model = pytest.importorskip("statsmodels.tsa.arima.model")
    # statsmodels fits no drift when d > 0, so the differenced simulation must have mean 0 there.
    y = simulate_arma(ar, ma, mean=0.0 if order[1] else 2.0, seed=15)
    if order[1]:
        y = np.cumsum(y)
    ours = ARIMA(order).fit(y)
    # statsmodels fits exact Gaussian likelihood, not CSS; at n = 2000 the two differ by far less than
    # their standard errors.
    trend = "c" if order[1] == 0 else "n"
    theirs = arima_model.ARIMA(y, order=order, trend=trend).fit()
    p, _, q = order
    params = np.asarray(theirs.params)
    offset = int(trend == "c")
    assert ours.ar_ == pytest.approx(params[offset : offset + p], abs=0.01)
    assert ours.ma_ == pytest.approx(params[offset + p : offset + p + q], abs=0.01)
    assert ours.sigma2_ == pytest.approx(params[-1], rel=0.01)
    assert ours.forecast(3) == pytest.approx(np.asarray(theirs.forecast(3)), abs=0.05)
