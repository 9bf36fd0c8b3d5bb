"""A day (or week) of LLM inference requests whose arrival rate follows a day/week shape.

The public Azure 2023 LLM traces cover about an hour each, so they set the request *sizes* and the shape of
a day has to come from elsewhere. POLCA's production row (six weeks of one inference row) shows a daily
cycle whose peak is what oversubscription has to survive; its exact curve is not published. strato uses a
documented shape for an interactive service in one region (docs/power.md): a night trough at 04:00 at 40 %
of the daily peak, a morning ramp, a plateau from 10:00 to 17:00 peaking at 15:00, an evening decline; and
weekend days at 75 % of a weekday. The hourly points are joined linearly, so the rate has no steps.

Arrivals are an inhomogeneous Poisson process, drawn exactly by mapping a unit-rate process through the
inverse of the cumulative rate (vectorised); request sizes are resampled from a base trace.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError
from strato.traces.llm.requests import LlmRequests

HOURLY_SHAPE: tuple[float, ...] = (
    0.55, 0.48, 0.44, 0.41, 0.40, 0.42, 0.50, 0.62,
    0.76, 0.87, 0.94, 0.97, 0.98, 0.97, 0.99, 1.00,
    0.98, 0.95, 0.90, 0.84, 0.78, 0.72, 0.66, 0.60,
)  # fmt: skip
"""Rate at each hour's start as a share of the day's peak (local time; hour 15 is the peak)."""

WEEKLY_SHAPE: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.75)
"""Monday to Sunday, each day's peak as a share of a weekday's."""


def rate_shape(time_s: NDArray[np.float64], *, start_day: int = 0) -> NDArray[np.float64]:
    """The shape (0..1, 1 at a weekday's peak) at ``time_s`` seconds after midnight of ``start_day``
    (0 = Monday)."""
    hours = np.asarray(time_s, dtype=np.float64) / 3600.0
    hour_of_day = np.mod(hours, 24.0)
    day = (np.floor(hours / 24.0).astype(np.int64) + start_day) % 7
    daily = np.interp(hour_of_day, np.arange(25), (*HOURLY_SHAPE, HOURLY_SHAPE[0]))
    weekly: NDArray[np.float64] = np.asarray(WEEKLY_SHAPE)[day]
    return np.asarray(daily * weekly, dtype=np.float64)


def diurnal(
    base: LlmRequests,
    peak_rps: float,
    duration_s: float = 86_400.0,
    *,
    start_day: int = 0,
    start_s: float = 0.0,
    seed: int = 0,
    name: str | None = None,
) -> LlmRequests:
    """Requests over ``[0, duration_s)`` arriving at ``peak_rps * rate_shape(start_s + t)``, token pairs
    resampled from ``base``."""
    if not peak_rps > 0:
        raise ConfigError(f"peak request rate must be positive, got {peak_rps!r}")
    if not duration_s > 0:
        raise ConfigError(f"duration must be positive, got {duration_s!r}")
    if not 0 <= start_day <= 6:
        raise ConfigError(f"start day must be 0 (Monday) .. 6 (Sunday), got {start_day!r}")
    if len(base) == 0:
        raise ConfigError(f"{base.name}: no requests to resample from")
    rng = np.random.default_rng(seed)
    # The cumulative expected count on a fine grid; the rate is piecewise linear in hours, so a
    # one-minute grid integrates it to within rounding.
    grid = np.linspace(0.0, duration_s, max(int(duration_s / 60.0), 1) + 1)
    rates = peak_rps * rate_shape(start_s + grid, start_day=start_day)
    cumulative = np.concatenate([[0.0], np.cumsum((rates[1:] + rates[:-1]) / 2 * np.diff(grid))])
    total = float(cumulative[-1])
    count = rng.poisson(total)
    unit = np.sort(rng.uniform(0.0, total, size=count))
    arrivals = np.interp(unit, cumulative, grid)
    picks = rng.integers(0, len(base), size=count)
    return LlmRequests(
        name or f"{base.name}@diurnal-peak-{peak_rps:g}rps",
        arrivals,
        base.prompt_tokens[picks],
        base.output_tokens[picks],
    )
