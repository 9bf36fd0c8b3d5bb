"""Summary statistics shared by every domain's evaluation.

Conventions, so that every domain reports numbers the same way:

* ``values`` may be any array-like of numbers of any shape; it is treated as one flat collection.
* Empty input raises :class:`~strato.errors.ConfigError` (a silent NaN in a results table is easy to miss
  and hard to trace back), except for :func:`ecdf`, which returns empty arrays, and :func:`summary`, which
  returns ``count == 0`` with NaN statistics so a per-group table can still show the empty group.
* NaN in the input raises :class:`ConfigError`: it nearly always means a bug upstream, and numpy would
  otherwise propagate it silently. Infinities are allowed.
* Percentile levels ``q`` are in percent (0..100), as in :func:`numpy.percentile`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt
from scipy import stats as _scipy_stats

from strato.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
# Array-shaped percentile levels or fractions; a plain float selects the scalar-returning overloads.
Levels = Sequence[float] | npt.NDArray[Any]

__all__ = [
    "ConfidenceInterval",
    "FloatArray",
    "Levels",
    "confidence_interval",
    "cv",
    "ecdf",
    "percentile",
    "summary",
    "top_share",
    "weighted_percentile",
]


def _as_values(values: npt.ArrayLike, *, name: str = "values", allow_empty: bool = False) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be numbers: {exc}") from exc
    if array.size == 0 and not allow_empty:
        raise ConfigError(f"{name} is empty; a statistic of no data is undefined")
    if np.isnan(array).any():
        raise ConfigError(f"{name} contains NaN")
    return array


def _as_levels(q: npt.ArrayLike, *, name: str, upper: float) -> FloatArray:
    try:
        levels = np.asarray(q, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a number or array of numbers: {exc}") from exc
    if np.isnan(levels).any() or (levels < 0).any() or (levels > upper).any():
        raise ConfigError(f"{name} must lie in [0, {upper:g}], got {q!r}")
    return levels


def _scalar_or_array(result: FloatArray, levels: FloatArray) -> float | FloatArray:
    if levels.ndim == 0:
        return float(result)
    return np.asarray(result, dtype=np.float64)


@overload
def percentile(values: npt.ArrayLike, q: float) -> float: ...
@overload
def percentile(values: npt.ArrayLike, q: Levels) -> FloatArray: ...
def percentile(values: npt.ArrayLike, q: npt.ArrayLike) -> float | FloatArray:
    """The ``q``-th percentile(s) of ``values`` with linear interpolation (numpy's default method).

    ``q`` is in percent; a scalar ``q`` gives a ``float``, an array ``q`` gives an array of the same shape.
    Empty input or NaN values raise :class:`ConfigError`.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    """
    array = _as_values(values)
    levels = _as_levels(q, name="q", upper=100.0)
    return _scalar_or_array(np.percentile(array, levels), levels)


def ecdf(values: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """The empirical CDF of ``values`` as ``(x, y)`` with ``y[i]`` = fraction of values ``<= x[i]``.

    ``x`` holds the distinct values in increasing order (ties are merged, so ``y`` is the true CDF at each
    ``x`` rather than an arbitrary point inside a vertical jump); ``y`` is increasing, in (0, 1], and ends
    at 1. Plot it with ``ax.step(x, y, where="post")``. Empty input gives two empty arrays.
    """
    array = _as_values(values, allow_empty=True)
    if array.size == 0:
        return np.empty(0, dtype=np.float64), np.empty(0, dtype=np.float64)
    x, counts = np.unique(array, return_counts=True)
    y = np.cumsum(counts) / array.size
    return x.astype(np.float64), y.astype(np.float64)


@overload
def weighted_percentile(values: npt.ArrayLike, weights: npt.ArrayLike, q: float) -> float: ...
@overload
def weighted_percentile(values: npt.ArrayLike, weights: npt.ArrayLike, q: Levels) -> FloatArray: ...
def weighted_percentile(
    values: npt.ArrayLike, weights: npt.ArrayLike, q: npt.ArrayLike
) -> float | FloatArray:
    """The weighted ``q``-th percentile(s): the smallest value ``v`` whose items weigh at least ``q`` %.

    Formally, the smallest ``v`` in ``values`` with ``sum(weights[values <= v]) >= q / 100 * sum(weights)``
    (the "inverted CDF" rule). No interpolation rule both ignores the scale of the weights and reduces to
    :func:`percentile`'s linear rule for equal weights, so we use the rule numpy itself uses for weighted
    percentiles (``np.percentile(..., weights=w, method="inverted_cdf")``): results are always actual data
    values, and integer weights act exactly as repetition counts.

    Weights must be finite, non-negative, of the same shape as ``values`` and not all zero; items of
    weight 0 have no influence at all.
    """
    array = _as_values(values)
    try:
        weight_array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"weights must be numbers: {exc}") from exc
    if weight_array.shape != np.shape(values):
        raise ConfigError(f"weights have shape {weight_array.shape} but values have shape {np.shape(values)}")
    weight_array = weight_array.ravel()
    if not np.isfinite(weight_array).all() or (weight_array < 0).any():
        raise ConfigError("weights must be finite and non-negative")
    keep = weight_array > 0
    if not keep.any():
        raise ConfigError("weights are all zero; a weighted percentile is undefined")
    array, weight_array = array[keep], weight_array[keep]

    levels = _as_levels(q, name="q", upper=100.0)
    order = np.argsort(array, kind="stable")
    sorted_values = array[order]
    cumulative = np.cumsum(weight_array[order])
    targets = levels / 100.0 * cumulative[-1]
    # Rounding in cumsum can leave the last cumulative weight a hair below q=100's target.
    index = np.minimum(np.searchsorted(cumulative, targets, side="left"), sorted_values.size - 1)
    return _scalar_or_array(sorted_values[index], levels)


def summary(values: npt.ArrayLike) -> dict[str, float]:
    """Count, mean, p50, p90, p99, min and max of ``values`` (keys in that order).

    ``count`` is an ``int``. Empty input gives ``count == 0`` and NaN for everything else rather than an
    error, so that one empty group does not abort a whole per-group table.
    """
    array = _as_values(values, allow_empty=True)
    if array.size == 0:
        nan = math.nan
        return {"count": 0, "mean": nan, "p50": nan, "p90": nan, "p99": nan, "min": nan, "max": nan}
    p50, p90, p99 = np.percentile(array, [50.0, 90.0, 99.0])
    return {
        "count": int(array.size),
        "mean": float(array.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def cv(values: npt.ArrayLike) -> float:
    """Coefficient of variation: population standard deviation (``ddof=0``) divided by the mean.

    A mean of exactly zero gives NaN (the ratio is undefined, and an error would be too harsh for idle
    series). A negative mean gives a negative result; take ``abs`` if you need a magnitude.
    """
    array = _as_values(values)
    mean = float(array.mean())
    if mean == 0.0:
        return math.nan
    return float(array.std()) / mean


class ConfidenceInterval(NamedTuple):
    """A two-sided confidence interval for a mean; unpacks as ``mean, low, high``."""

    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half the width of the interval: the "±" part of "mean ± half_width"."""
        return (self.high - self.low) / 2.0


def confidence_interval(values: npt.ArrayLike, level: float = 0.95) -> ConfidenceInterval:
    """Student-t confidence interval for the mean of ``values`` at confidence ``level`` (in (0, 1)).

    Half width = ``t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
    (``ddof=1``). With a single value no interval can be estimated, so ``low`` and ``high`` are NaN while
    ``mean`` is still that value.
    """
    if not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
        raise ConfigError(f"confidence level must lie strictly between 0 and 1, got {level!r}")
    array = _as_values(values)
    mean = float(array.mean())
    n = array.size
    if n < 2:
        return ConfidenceInterval(mean, math.nan, math.nan)
    sem = float(array.std(ddof=1)) / math.sqrt(n)
    half = float(_scipy_stats.t.ppf((1.0 + float(level)) / 2.0, n - 1)) * sem
    return ConfidenceInterval(mean, mean - half, mean + half)


@overload
def top_share(values: npt.ArrayLike, fraction: float) -> float: ...
@overload
def top_share(values: npt.ArrayLike, fraction: Levels) -> FloatArray: ...
def top_share(values: npt.ArrayLike, fraction: npt.ArrayLike) -> float | FloatArray:
    """Share of the total of ``values`` produced by the largest ``fraction`` (0..1) of the items.

    E.g. ``top_share(invocations_per_app, 0.186)`` answers "what share of invocations come from the
    busiest 18.6 % of apps". When ``fraction * n`` is not a whole number, the boundary item counts in
    proportion (linear interpolation along the concentration curve), so the result is continuous and
    increasing in ``fraction``, 0 at 0 and 1 at 1. Values must be non-negative; a zero total gives NaN.
    A scalar ``fraction`` gives a ``float``; an array gives an array of the same shape.
    """
    array = _as_values(values)
    if (array < 0).any() or not np.isfinite(array).all():
        raise ConfigError(
            "top_share needs finite, non-negative values (a share of a total is otherwise undefined)"
        )
    levels = _as_levels(fraction, name="fraction", upper=1.0)
    total = float(array.sum())
    if total == 0.0:
        return _scalar_or_array(np.full(levels.shape, np.nan), levels)
    descending = np.sort(array)[::-1]
    curve = np.concatenate(([0.0], np.cumsum(descending) / total))
    # Rounding in cumsum can overshoot 1 before the last item or undershoot it at the end; a share must
    # stay a share, and "all items" must be exactly everything.
    curve = np.minimum(curve, 1.0)
    curve[-1] = 1.0
    positions = np.arange(array.size + 1, dtype=np.float64) / array.size
    return _scalar_or_array(np.interp(levels, positions, curve), levels)
