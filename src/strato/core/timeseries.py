"""A small ARIMA(p, d, q) for short idle-time series, and the robust one-step forecast built on it.

The hybrid keep-alive policy of "Serverless in the Wild" (Shahrad et al., ATC 2020) switches to an
ARIMA forecast of an application's next idle time when most of its idle times fall outside the
histogram range. Those applications are invoked only a few times a day, so the series are short
(2 to a few hundred points) and the forecast is called very often. That shapes this module:

* estimation is conditional sum of squares (CSS): for q == 0 it is ordinary least squares in closed
  form; for q > 0 it is a Levenberg-Marquardt fit started from a Hannan-Rissanen estimate, in a
  parametrisation that can only express stationary AR and invertible MA polynomials;
* everything is deterministic: no random restarts, no threads, fixed iteration limits, so the same
  input gives bit-identical output;
* :func:`predict_next` never raises on short, constant or odd (finite) series; it falls back to a
  recent mean and clips the forecast to a sane, non-negative band.

statsmodels is deliberately not a dependency; the tests compare against it when it is installed.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from strato.errors import ConfigError

__all__ = [
    "ARIMA",
    "FALLBACK_WINDOW",
    "default_min_points",
    "min_fit_length",
    "predict_next",
]

FloatArray = npt.NDArray[np.float64]
Order = tuple[int, int, int]

FALLBACK_WINDOW: Final = 5
"""How many of the most recent points :func:`predict_next` averages when it cannot use ARIMA."""

# After scaling the differenced series to [-1, 1], a spread this small is rounding noise (for example
# the differences of a float linear ramp); fitting coefficients to it would only amplify that noise.
_CONSTANT_SPREAD: Final = 1e-12
# Partial autocorrelations of exactly +-1 put a root on the unit circle, where the MA inversion filter
# stops forgetting its start; keeping a hair inside keeps every CSS evaluation finite.
_PACF_LIMIT: Final = 1.0 - 1e-10
# Hannan-Rissanen estimates that land this close to the boundary make a poor start for the optimiser.
_START_PACF_LIMIT: Final = 0.95


def _validate_order(order: Any) -> Order:
    try:
        p, d, q = order
    except (TypeError, ValueError):
        raise ConfigError(f"ARIMA order must be a tuple (p, d, q) of three integers, got {order!r}") from None
    checked: list[int] = []
    for name, value in zip("pdq", (p, d, q), strict=True):
        # bool is an int subclass, but order=(True, 0, 0) is surely a mistake.
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"ARIMA order {name} must be an integer, got {value!r}")
        if value < 0:
            raise ConfigError(f"ARIMA order {name} must be >= 0, got {value}")
        checked.append(int(value))
    return checked[0], checked[1], checked[2]


def _as_series(y: npt.ArrayLike) -> FloatArray:
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read the series as numbers: {exc}") from None
    if arr.ndim != 1:
        raise ConfigError(f"the series must be one-dimensional, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ConfigError(f"the series has a non-finite value ({arr[bad[0]]}) at index {bad[0]}")
    return arr


def min_fit_length(order: tuple[int, int, int], include_mean: bool = True) -> int:
    """Fewest points :meth:`ARIMA.fit` accepts for ``order``.

    After differencing d times and spending p points on the first lags, at least one more equation
    must remain than there are estimated parameters (p + q, plus one for the mean), so the residual
    variance has a degree of freedom: ``d + 2p + q + include_mean + 1``.
    """
    p, d, q = _validate_order(order)
    return d + 2 * p + q + int(include_mean) + 1


def default_min_points(order: tuple[int, int, int]) -> int:
    """Fewest points :func:`predict_next` wants before it trusts ARIMA over the recent mean.

    Three points per estimated parameter (p + q + 1 for the mean) after differencing, i.e.
    ``d + 3 (p + q + 1)``, and never fewer than :func:`min_fit_length`. For the default (1, 0, 0) that is
    6 points; for (1, 1, 1) it is 10. Fits on fewer points are mostly noise.
    """
    p, d, q = _validate_order(order)
    return max(min_fit_length((p, d, q)), d + 3 * (p + q + 1))


def _bounded(raw: float) -> tuple[float, float]:
    """Map R onto (-1, 1) smoothly; return the value and its derivative (zero where the limit clips)."""
    # Unlike tanh, x / sqrt(1 + x^2) does not round to exactly 1 for moderate inputs.
    root = math.sqrt(1.0 + raw * raw)
    value = raw / root
    if abs(value) < _PACF_LIMIT:
        return value, 1.0 / (root * root * root)
    return math.copysign(_PACF_LIMIT, value), 0.0


def _pacf_to_coeffs(pacf: list[float]) -> tuple[list[float], list[list[float]]]:
    """Durbin-Levinson: partial autocorrelations in (-1, 1) -> coefficients of a stationary AR.

    This is why the optimiser cannot leave the stationary (or, negated, the invertible) region. The
    Jacobian d coeffs / d pacf is carried along so the optimiser gets exact derivatives. Plain floats:
    the orders are tiny and this runs on every evaluation, where numpy's per-call overhead dominates.
    """
    k = len(pacf)
    coeffs: list[float] = []
    jac: list[list[float]] = []
    for m, r in enumerate(pacf):
        new_jac = [[jac[i][c] - r * jac[m - 1 - i][c] for c in range(k)] for i in range(m)]
        for i in range(m):
            new_jac[i][m] = -coeffs[m - 1 - i]
        new_jac.append([1.0 if c == m else 0.0 for c in range(k)])
        coeffs = [coeffs[i] - r * coeffs[m - 1 - i] for i in range(m)] + [r]
        jac = new_jac
    return coeffs, jac


def _coeffs_to_pacf(coeffs: FloatArray) -> FloatArray | None:
    """Inverse of :func:`_pacf_to_coeffs` (step-down recursion); None when the AR is not stationary."""
    coeffs = np.array(coeffs, dtype=np.float64)
    pacf = np.zeros(coeffs.size)
    for k in range(coeffs.size - 1, -1, -1):
        r = float(coeffs[k])
        if not abs(r) < 1.0:
            return None
        pacf[k] = r
        coeffs = (coeffs[:k] + r * coeffs[:k][::-1]) / (1.0 - r * r)
    return pacf


def _start_raw(coeffs: FloatArray) -> FloatArray:
    """Unconstrained parameters whose image under :func:`_bounded` and Durbin-Levinson is ``coeffs``."""
    pacf = _coeffs_to_pacf(coeffs)
    if pacf is None:
        # A non-stationary start cannot be expressed in the bounded parametrisation; white noise can.
        return np.zeros(coeffs.size)
    pacf = np.clip(pacf, -_START_PACF_LIMIT, _START_PACF_LIMIT)
    out: FloatArray = pacf / np.sqrt(1.0 - pacf * pacf)
    return out


def _lag_matrix(x: FloatArray, lags: int, start: int) -> FloatArray:
    """Columns x[t-1], ..., x[t-lags] for t = start .. len(x)-1."""
    n = x.size
    out = np.empty((n - start, lags))
    for i in range(1, lags + 1):
        out[:, i - 1] = x[start - i : n - i]
    return out


def _fit_ar_ols(z: FloatArray, p: int, include_mean: bool) -> tuple[FloatArray, float, FloatArray]:
    """CSS for a pure AR is least squares of z[t] on (1, z[t-1], ..., z[t-p])."""
    target = z[p:]
    design = _lag_matrix(z, p, p)
    if include_mean:
        design = np.hstack([np.ones((target.size, 1)), design])
    if design.shape[1] == 0:
        return np.zeros(0), 0.0, target.copy()
    # lstsq returns the minimum-norm solution when lags are collinear (periodic or piecewise-constant
    # series), which still reproduces such series exactly instead of failing.
    coef: FloatArray = np.linalg.lstsq(design, target, rcond=None)[0].astype(np.float64)
    resid: FloatArray = target - design @ coef
    intercept = float(coef[0]) if include_mean else 0.0
    return coef[int(include_mean) :], intercept, resid


def _hannan_rissanen(z: FloatArray, p: int, q: int) -> tuple[FloatArray, FloatArray]:
    """Start values for the CSS optimiser: innovations from a long AR, then OLS on lags and innovations.

    ``z`` is already centred, so neither stage needs an intercept. When the series is too short for a
    long AR, the AR part comes from plain OLS and the MA part starts at zero.
    """
    n = z.size
    wanted = max(2 * max(p, q), int(math.log(n) ** 2))
    # Stage 1 needs more rows than lags; stage 2 needs more rows than its p + q regressors.
    m = min(wanted, (n - 1) // 2, n - 2 * q - p - 1)
    if m < 1:
        return _fit_ar_ols(z, p, include_mean=False)[0], np.zeros(q)
    long_lags = _lag_matrix(z, m, m)
    long_coef = np.linalg.lstsq(long_lags, z[m:], rcond=None)[0]
    innovations = np.zeros(n)
    innovations[m:] = z[m:] - long_lags @ long_coef
    start = max(m + q, p)
    design = np.hstack([_lag_matrix(z, p, start), _lag_matrix(innovations, q, start)])
    coef: FloatArray = np.linalg.lstsq(design, z[start:], rcond=None)[0].astype(np.float64)
    return coef[:p], coef[p:]


class _CSSProblem:
    """CSS residuals of an ARMA(p, q) on the scaled series ``z`` and their exact Jacobian.

    Parameters are unconstrained: ``raw[:p]`` and ``raw[p:p+q]`` map through :func:`_bounded` and
    Durbin-Levinson to a stationary AR and an invertible MA; ``raw[p+q]`` (when fitting a mean) is the
    process mean. Exact derivatives cost one filter call per evaluation and make Levenberg-Marquardt
    several times faster than finite differences, which matters when fits run thousands of times.
    """

    def __init__(self, z: FloatArray, p: int, q: int, include_mean: bool) -> None:
        self.z, self.p, self.q, self.include_mean = z, p, q, include_mean
        # MINPACK asks for the Jacobian at the point whose residuals it just computed; remembering that
        # point saves a filter pass per iteration.
        self._cached_raw = b""
        self._cached: tuple[list[float], list[float], float, FloatArray, FloatArray, FloatArray] | None = None

    def coefficients(self, raw: FloatArray) -> tuple[list[float], list[float], float]:
        """(phi, theta, mu) for the unconstrained ``raw``."""
        p, q = self.p, self.q
        values = raw.tolist()
        phi = _pacf_to_coeffs([_bounded(x)[0] for x in values[:p]])[0]
        # theta(B) = 1 + sum theta_j B^j is invertible exactly when -theta are stationary AR coefficients.
        theta = [-c for c in _pacf_to_coeffs([_bounded(x)[0] for x in values[p : p + q]])[0]]
        mu = values[p + q] if self.include_mean else 0.0
        return phi, theta, mu

    def _chain(self, raw: list[float]) -> FloatArray:
        """d coefficients / d raw for one block (AR or negated MA)."""
        bounded = [_bounded(x) for x in raw]
        jac = _pacf_to_coeffs([r for r, _ in bounded])[1]
        k = len(raw)
        out: FloatArray = np.array(jac, dtype=np.float64).reshape(k, k) * np.array([d for _, d in bounded])
        return out

    def _evaluate(
        self, raw: FloatArray
    ) -> tuple[list[float], list[float], float, FloatArray, FloatArray, FloatArray]:
        key = raw.tobytes()
        if self._cached is not None and key == self._cached_raw:
            return self._cached
        phi, theta, mu = self.coefficients(raw)
        p = self.p
        x = self.z - mu
        u = x[p:].copy()
        for i, c in enumerate(phi, start=1):
            u -= c * x[p - i : x.size - i]
        denominator = np.array([1.0, *theta])
        # e[t] = u[t] - sum theta_j e[t-j], with pre-sample innovations at 0, is an all-pole filter.
        from scipy.signal import lfilter  # imported on first fit: scipy.signal alone takes ~0.4 s

        e = np.asarray(lfilter([1.0], denominator, u), dtype=np.float64)
        self._cached_raw, self._cached = key, (phi, theta, mu, e, x, denominator)
        return self._cached

    def residuals(self, raw: FloatArray) -> FloatArray:
        return self._evaluate(raw)[3].copy()

    def jacobian(self, raw: FloatArray) -> FloatArray:
        p, q = self.p, self.q
        phi, _, _, e, x, denominator = self._evaluate(raw)
        rows = e.size
        # d e / d(phi, theta, mu) is the same all-pole filter applied to the derivative of its input.
        inputs = np.zeros((rows, p + q + int(self.include_mean)))
        for i in range(1, p + 1):
            inputs[:, i - 1] = -x[p - i : x.size - i]
        for j in range(1, q + 1):
            inputs[j:, p + j - 1] = -e[: rows - j]
        if self.include_mean:
            inputs[:, p + q] = sum(phi) - 1.0
        from scipy.signal import lfilter

        natural = np.asarray(lfilter([1.0], denominator, inputs, axis=0), dtype=np.float64)
        values = raw.tolist()
        jac = natural.copy()
        if p:
            jac[:, :p] = natural[:, :p] @ self._chain(values[:p])
        if q:
            jac[:, p : p + q] = -(natural[:, p : p + q] @ self._chain(values[p : p + q]))
        return jac


def _fit_arma_css(
    z: FloatArray, p: int, q: int, include_mean: bool
) -> tuple[FloatArray, FloatArray, float, FloatArray]:
    phi0, theta0 = _hannan_rissanen(z, p, q)
    raw0 = np.concatenate([_start_raw(phi0), _start_raw(-theta0), np.zeros(int(include_mean))])
    problem = _CSSProblem(z, p, q, include_mean)
    raw = raw0
    try:
        # method="lm" (MINPACK) is deterministic and, for a handful of parameters, fast.
        from scipy.optimize import least_squares

        result = least_squares(
            problem.residuals, raw0, jac=problem.jacobian, method="lm", xtol=1e-8, ftol=1e-8, max_nfev=200
        )
        if np.all(np.isfinite(result.x)):
            raw = np.asarray(result.x, dtype=np.float64)
    except ValueError:
        pass  # keep the Hannan-Rissanen estimate, which is already a consistent estimator
    phi, theta, mu = problem.coefficients(raw)
    resid = problem.residuals(raw)
    return np.array(phi, dtype=np.float64), np.array(theta, dtype=np.float64), mu * (1.0 - sum(phi)), resid


class ARIMA:
    """ARIMA(p, d, q) estimated by conditional sum of squares, with a scikit-learn-like interface.

    The model for the series differenced d times, w, is::

        w[t] = intercept_ + sum_i ar_[i] w[t-1-i] + e[t] + sum_j ma_[j] e[t-1-j],   Var e = sigma2_

    With ``include_mean=False`` the intercept is fixed at 0. With d > 0 and ``include_mean=True`` the
    intercept acts as a drift, so a linear trend with d = 1 is extrapolated rather than flattened.

    Fitted attributes: ``ar_`` (p,), ``ma_`` (q,), ``intercept_``, ``sigma2_`` (mean squared CSS
    residual) and ``n_obs_``. For q > 0 the AR part is stationary and the MA part invertible by
    construction; for q == 0 the OLS estimate is unconstrained (it is the exact CSS minimum).
    A (differenced) series that is constant up to rounding gets zero coefficients and forecasts the
    constant exactly.
    """

    def __init__(self, order: tuple[int, int, int] = (1, 0, 0), include_mean: bool = True) -> None:
        self.order: Order = _validate_order(order)
        self.include_mean = bool(include_mean)
        self.ar_: FloatArray = np.zeros(0)
        self.ma_: FloatArray = np.zeros(0)
        self.intercept_ = 0.0
        self.sigma2_ = 0.0
        self.n_obs_ = 0
        self._fitted = False
        # Internally the differenced series is scaled: w = unit * (center + spread * z), with z in
        # [-1, 1]. That keeps the optimiser well conditioned and lets huge or tiny values fit without
        # overflow; forecasts are made in z and mapped back only at the end.
        self._unit = 1.0
        self._center = 0.0
        self._spread = 1.0
        self._z_intercept = 0.0
        self._phi: list[float] = []
        self._theta: list[float] = []
        self._z_tail: FloatArray = np.zeros(0)
        self._e_tail: FloatArray = np.zeros(0)
        self._levels: list[float] = []

    def __repr__(self) -> str:
        return f"ARIMA(order={self.order}, include_mean={self.include_mean})"

    def fit(self, y: npt.ArrayLike) -> ARIMA:
        """Estimate the coefficients from the 1-D finite series ``y``; returns ``self``."""
        series = _as_series(y)
        p, d, q = self.order
        need = min_fit_length(self.order, self.include_mean)
        if series.size < need:
            raise ConfigError(f"ARIMA{self.order} needs at least {need} points to fit, got {series.size}")
        levels: list[float] = []
        w = series
        with np.errstate(all="ignore"):
            for _ in range(d):
                levels.append(float(w[-1]))
                w = np.diff(w)
            if not np.all(np.isfinite(w)):
                raise ConfigError("differencing the series overflowed; its values are too large")
            unit = float(np.max(np.abs(w)))
            if unit == 0.0:
                unit = 1.0
            v = w / unit
            center = float(np.mean(v)) if self.include_mean else 0.0
            z = v - center
            spread = float(np.max(np.abs(z)))

            if spread <= _CONSTANT_SPREAD:
                spread = 1.0
                z = np.zeros_like(z)
                phi, theta, z_intercept = np.zeros(p), np.zeros(q), 0.0
                resid = np.zeros(z.size - p)
            else:
                z = z / spread
                if q == 0:
                    phi, z_intercept, resid = _fit_ar_ols(z, p, self.include_mean)
                    theta = np.zeros(0)
                else:
                    phi, theta, z_intercept, resid = _fit_arma_css(z, p, q, self.include_mean)

            scale = unit * spread
            self.ar_ = phi.copy()
            self.ma_ = theta.copy()
            self.intercept_ = unit * (center * (1.0 - float(np.sum(phi))) + spread * z_intercept)
            self.sigma2_ = scale * scale * float(np.mean(resid * resid)) if resid.size else 0.0
        self.n_obs_ = int(series.size)
        self._unit, self._center, self._spread = unit, center, spread
        self._z_intercept = z_intercept
        self._phi, self._theta = phi.tolist(), theta.tolist()
        self._z_tail = z[z.size - p :].copy()
        self._e_tail = resid[resid.size - q :].copy()
        self._levels = levels
        self._fitted = True
        return self

    def forecast(self, steps: int = 1) -> FloatArray:
        """Forecasts of the next ``steps`` values of the original (undifferenced) series.

        Future innovations are taken as zero. The result is not clipped and may be non-finite for
        explosive unconstrained AR fits; :func:`predict_next` guards against that.
        """
        if not self._fitted:
            raise ConfigError("ARIMA.forecast() was called before fit()")
        if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
            raise ConfigError(f"forecast steps must be a positive integer, got {steps!r}")
        # Plain floats in a fixed order: the recursion is tiny, and the summation order is then fixed,
        # which is what makes repeated forecasts bit-identical.
        phi, theta = self._phi, self._theta
        z_hist, e_hist = self._z_tail.tolist(), self._e_tail.tolist()
        out = np.empty(int(steps))
        with np.errstate(all="ignore"):
            for h in range(int(steps)):
                value = self._z_intercept
                for i, c in enumerate(phi):
                    value += c * z_hist[-1 - i]
                for j, c in enumerate(theta):
                    value += c * e_hist[-1 - j]
                z_hist.append(value)
                e_hist.append(0.0)
                out[h] = value
            result: FloatArray = self._unit * (self._center + self._spread * out)
            for level in reversed(self._levels):
                result = level + np.cumsum(result)
        return result


def _recent_mean(series: FloatArray) -> float:
    tail = series[-FALLBACK_WINDOW:]
    # Dividing before summing cannot overflow, even for values near the float maximum.
    return float(np.sum(tail / tail.size))


def predict_next(
    series: npt.ArrayLike,
    order: tuple[int, int, int] = (1, 0, 0),
    *,
    min_points: int | None = None,
) -> float:
    """Robust one-step forecast of a non-negative series (idle times), as the keep-alive policy needs.

    * Empty series: 0.0.
    * Fewer than ``min_points`` points (default :func:`default_min_points`; never below
      :func:`min_fit_length`), a fit that fails numerically, or a non-finite forecast: the mean of the
      last :data:`FALLBACK_WINDOW` points.
    * The result is clipped to ``[max(0, min(series) / 2), max(that, 2 * max(series))]``: idle times
      are non-negative, and a short series gives no evidence for anything far outside its range.

    Invalid ``order`` or ``min_points`` and non-finite values raise :class:`ConfigError`; every finite
    1-D series otherwise returns a finite float >= 0.
    """
    checked = _validate_order(order)
    if min_points is not None and (
        isinstance(min_points, bool) or not isinstance(min_points, int | np.integer) or min_points < 1
    ):
        raise ConfigError(f"min_points must be a positive integer or None, got {min_points!r}")
    y = _as_series(series)
    if y.size == 0:
        return 0.0
    need = default_min_points(checked) if min_points is None else int(min_points)
    need = max(need, min_fit_length(checked))
    with np.errstate(all="ignore"):
        low = max(0.0, 0.5 * float(np.min(y)))
        # Doubling the largest float overflows; the band then ends at the largest finite value.
        high = max(low, min(2.0 * float(np.max(y)), sys.float_info.max))
        value = _recent_mean(y)
        if not math.isfinite(value):  # the sum behind the mean overflowed
            value = float(np.median(y[-FALLBACK_WINDOW:]))
        if y.size >= need:
            try:
                predicted = float(ARIMA(checked).fit(y).forecast(1)[0])
            except (ConfigError, ArithmeticError, ValueError):
                predicted = math.nan
            if math.isfinite(predicted):
                value = predicted
    return min(max(value, low), high)
