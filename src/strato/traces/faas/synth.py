"""Seeded synthetic workloads shaped like the Azure Functions 2019 trace (Shahrad et al., ATC 2020).

The generator reproduces the paper's published characterisation, not any particular day of the trace. Every
distribution below is either a published fit or calibrated so that the characterisation
(:func:`strato.traces.faas.describe.describe`) measures the published figure on the output;
``tests/test_traces_synth.py`` checks that it does.

Structure
    * Functions per app: P(1) 54 %, P(2) 16 %, P(3) 10 %, P(4-5) 8 %, P(6-10) 7 %, P(11+) 5 % (the paper's
      Fig. 1 as summarised in public write-ups), 6-10 split in proportion to n^-2, 11+ a discrete Pareto
      with exponent 2.18 so that about 0.04 % of apps have more than 100 functions, truncated at
      ``max_functions_per_app``.
    * Triggers, independently per function: HTTP 55 %, queue 15 %, event 2 %, orchestration 7 %, timer 16 %,
      storage 3 %, others 2 % of functions.
    * App memory (MB, the app's average allocation): Burr XII with c 11.652, k 0.221, lambda 107.083
      (the paper's fit), clipped to [64, 1536] MB, the consumption plan's range.
    * Function average duration: log-normal, ln(seconds) ~ N(-0.38, 2.36) (the paper's fit), clipped to
      [1 ms, 600 s] (the platform's timeout). Within a function, durations are log-normal with a spread
      sigma_w = 0.45 exp(0.9 Z) clipped to [0, 2]; the real 2019 duration files have a median p99/p50 of
      about e^(2.33 * 0.45). The stored percentiles (0, 1, 25, 50, 75, 99, 100) come from that
      distribution with the mean held at the drawn average; 0 and 100 use the 0.1 and 99.9 % points.

Per-app average rate (invocations per day), by stratified inverse-CDF sampling of ``u``
    * u in [0, 0.435]: log-uniform pieces through 10^-2, 1, 4 and 24 per day at u = 0, 0.10, 0.25, 0.435.
      The lower knots follow the real sampled day; the last one sits 1.5 points below the paper's 45 %
      because Poisson noise carries more apps from just above 24 a day to below it than back.
    * u in [0.435, 0.81]: log10 rate = log10 24 + log10 60 * (0.3 x + 0.7 x^4), x = (u - 0.435) / 0.375,
      reaching one per minute (1440 per day) at u = 0.81, the paper's 81 %. The quartic term keeps most
      of these apps nearer once an hour than once a minute; see "Concentration versus size".
    * u in [0.81, 1]: a Pareto tail with exponent 0.3 from 1440 per day, truncated at ``rate_cap_per_min``.
    The expected rates span 7.5 orders of magnitude (10^-2 to 2.9 10^5 per day; the paper: about 8 over
    two weeks); about 9 % of apps are not invoked at all in a day, as apps of a two-week trace would.

Concentration versus size (the cap). The paper's 81 % / 99.6 % pair makes the top 18.6 % of apps produce
about 250 times what all the rest do. The apps just under once a minute alone bring tens of invocations per
app per day, so 99.6 % needs more than ten thousand invocations per app per day on average: the paper's
trace has an uncapped tail, which at full scale means billions of invocations a day. The default cap, 200
per minute (3.3 per second) for the busiest app, gives 98.8 % for about 5,900 invocations per app per day,
about 90 M for a 46,000-function (15,200-app) day; the real public day has about 31 M. Raising the cap moves
the share towards 99.6 % at the price of a bigger trace: ``rate_cap=1000`` gives 99.6 % with 2.8 times the
invocations.

Placement of apps in the rate distribution. Rates are handed out by rank of a noisy score, the log of the
app's mean trigger weight plus N(0, 1.5) noise, where a trigger's weight is its share of invocations over its
share of functions (event 12.5, queue 2.3, ..., timer 0.125). That keeps the rate marginal exact while
apps with event and queue functions are busier and timer apps quieter, moving the per-trigger invocation
shares towards the paper's (36/34/25/2/2/1/1 %); they stay noisy because a few apps make most invocations.
An app's rate is split over its functions by trigger weight times a log-normal(0, 1) factor.

Arrival processes (a share ``bursty_fraction`` of apps is bursty; of the others, a share
``scheduled_fraction`` runs on a schedule and the rest are smooth)
    * Timer functions fire strictly periodically, with the period snapped to a cron-like value (1 s .. 30 d)
      and a uniform phase: inter-arrival CV ~ 0.
    * Scheduled apps (pollers, cron jobs outside the platform): the app's non-timer arrivals are strictly
      periodic in the same way, each going to one of its non-timer functions in proportion to its rate.
    * Smooth apps: a stationary gamma renewal process at app level, its shape log-uniform per app in
      [2, 400] (inter-arrival CV 0.71 down to 0.05), arrivals spread over the functions as above.
    * Scheduled and smooth arrivals bring a follow-up (a retry, a chained call) to the same function in the
      same or the next minute with a per-app probability, log-uniform in [0.03, 1]. Real apps have such
      pairs: most have a 5th-percentile idle time under a minute even when they are mostly periodic.
    * Above 4 non-timer arrivals a minute an app is generated per minute instead, each function getting an
      evenly spread (deterministic) count per minute, since per-arrival draws would dominate the run time.
    * Bursty apps: a Poisson process modulated by a gamma(0.3) factor per block of 1-120 minutes
      (log-uniform per app), rescaled to average 1 over the trace and shared by the app's functions:
      mostly idle with bursts (on/off), CV well above 1 once an app has a dozen arrivals.
    ``bursty_fraction`` 0.5 gives about 40 % of apps with an inter-arrival CV above 1 (the paper's figure):
    timer-only apps and bursty apps with few arrivals make up the difference.

Per-app idle-time structure. The shapes, the scheduled share, the follow-ups and the burst factor are
calibrated against the real traces' per-app idle times (``strato traces idle``, docs/keepalive.md has the
table): the distribution over apps of the idle-time CV, 5th and 99th percentiles and the share of
timer-like apps. The two real references disagree (raw-format-100-8h has 38 % timer-like apps among 66
measured, sampled/1350 13 % among 863); the generator's CV and percentile distributions sit between
them, nearer the larger sample, but it makes fewer timer-like apps than either (7-9 %). It used to
give every smooth app gamma(3) idle times, with no timer-like smooth apps and no short idle times in
periodic ones.

Small workloads reproduce the marginals closely because app-level draws (rate, functions, memory,
burstiness) use stratified uniforms: one draw from each of ``n_apps`` equal slices of (0, 1), shuffled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtri

from strato.core.rng import RandomStreams
from strato.core.specs import parse_synthetic_spec
from strato.errors import ConfigError
from strato.traces.faas.model import DURATION_PERCENTILES, Workload

__all__ = [
    "TRIGGERS",
    "TRIGGER_FUNCTION_SHARE",
    "TRIGGER_INVOCATION_SHARE",
    "SynthConfig",
    "generate",
    "parse_synth_spec",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

TRIGGERS: tuple[str, ...] = ("http", "queue", "event", "orchestration", "timer", "storage", "others")
TRIGGER_FUNCTION_SHARE: tuple[float, ...] = (0.55, 0.15, 0.02, 0.07, 0.16, 0.03, 0.02)
TRIGGER_INVOCATION_SHARE: tuple[float, ...] = (0.36, 0.34, 0.25, 0.02, 0.02, 0.01, 0.01)
_TIMER = TRIGGERS.index("timer")

MINUTES_PER_DAY = 1440

# Functions per app: explicit probabilities for 1..10, then a Pareto tail from 11.
_FUNCTION_COUNT_PMF_1_5 = (0.54, 0.16, 0.10, 0.045, 0.035)
_FUNCTION_COUNT_6_10 = 0.07
_FUNCTION_COUNT_TAIL = 0.05
_FUNCTION_TAIL_EXPONENT = 2.18

# Per-app rate quantile function (log10 invocations per day).
_LOW_KNOTS_U = (0.0, 0.10, 0.25, 0.435)
_LOW_KNOTS_LOG10 = (-2.0, 0.0, math.log10(4.0), math.log10(24.0))
_HOURLY_U, _MINUTELY_U = 0.435, 0.81
_BAND_LINEAR, _BAND_POWER = 0.3, 4.0
_TAIL_EXPONENT = 0.3

_COUPLING_NOISE = 1.5
_SPLIT_SIGMA = 1.0

_SMOOTH_SHAPE_RANGE = (2.0, 400.0)
"""Smooth apps' gamma renewal shape, log-uniform per app: inter-arrival CV from 0.71 down to 0.05."""
_FOLLOW_UP_RANGE = (0.03, 1.0)
"""Per-app probability, log-uniform, that a smooth or scheduled arrival brings a follow-up."""
_FOLLOW_UP_MINUTES = 2
"""A follow-up lands in the same minute as its arrival or in one of the next ``_FOLLOW_UP_MINUTES - 1``."""
_CELL_PATH_RATE = 4.0
"""Non-timer app rate (per minute) above which counts are generated per minute rather than per arrival."""
_RENEWAL_MARGIN_SD = 6.0
_BURST_SHAPE = 0.3
_BURST_BLOCK_MINUTES = (1.0, 120.0)

_SUBMINUTE_PERIODS_S = (1, 2, 5, 10, 15, 20, 30)
_CRON_PERIODS_MIN = (1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 720, 1440, 2880, 10080, 43200)
_TIMER_PERIODS_S = np.array(_SUBMINUTE_PERIODS_S + tuple(60 * m for m in _CRON_PERIODS_MIN), dtype=np.float64)

_DURATION_LOG_MEAN_S, _DURATION_LOG_SIGMA_S = -0.38, 2.36
_DURATION_RANGE_MS = (1.0, 600_000.0)
_SPREAD_MEDIAN, _SPREAD_SIGMA, _SPREAD_MAX = 0.45, 0.9, 2.0
_EXTREME_LEVEL = 0.001
"""Percentiles 0 and 100 (observed minimum and maximum) are taken at 0.1 % and 99.9 %."""

_BURR_C, _BURR_K, _BURR_LAMBDA_MB = 11.652, 0.221, 107.083
_MEMORY_RANGE_MB = (64.0, 1536.0)


@dataclass(frozen=True)
class SynthConfig:
    """What :func:`generate` builds; every field has a spec key for :func:`parse_synth_spec`.

    ``n_apps`` (``apps``): number of applications; about 3 functions each on average.
    ``minutes`` (``minutes``): length of the trace; rates are per day, so a shorter trace has fewer
    invocations but the same shares.
    ``seed`` (``seed``): the same config and seed always give the identical workload.
    ``rate_cap_per_min`` (``rate_cap``): the busiest app's average rate; see the module docstring for how
    it trades the top-18.6 % share against the trace size.
    ``bursty_fraction`` (``bursty``): share of apps with on/off (bursty) arrivals.
    ``scheduled_fraction`` (``scheduled``): share of the other apps whose arrivals are strictly periodic.
    ``max_functions_per_app`` (``max_functions``): truncation of the functions-per-app tail.
    """

    n_apps: int = 500
    minutes: int = MINUTES_PER_DAY
    seed: int = 0
    rate_cap_per_min: float = 200.0
    bursty_fraction: float = 0.5
    scheduled_fraction: float = 0.7
    max_functions_per_app: int = 2000

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = _field_problem(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"synthetic workload: {f.name} {problem}")

    @property
    def name(self) -> str:
        length = "" if self.minutes == MINUTES_PER_DAY else f"-{self.minutes}min"
        return f"synthetic-{self.n_apps}apps{length}-s{self.seed}"


def _field_problem(name: str, value: object) -> str:
    """Why ``value`` is not acceptable for the :class:`SynthConfig` field ``name``, or ``""``."""
    # bool is an int subclass; True as a size or seed is almost certainly a mistake.
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name in ("n_apps", "minutes", "max_functions_per_app"):
        ok = number and isinstance(value, int) and value >= 1
        return "" if ok else f"must be a positive integer, got {value!r}"
    if name == "seed":
        ok = number and isinstance(value, int) and value >= 0
        return "" if ok else f"must be a non-negative integer, got {value!r}"
    if name == "rate_cap_per_min":
        ok = number and math.isfinite(float(value)) and float(value) > 0  # type: ignore[arg-type]
        return "" if ok else f"must be a positive number (invocations per minute), got {value!r}"
    if name in ("bursty_fraction", "scheduled_fraction"):
        ok = number and 0.0 <= float(value) <= 1.0  # type: ignore[arg-type]
        return "" if ok else f"must lie in [0, 1], got {value!r}"
    raise AssertionError(f"no rule for field {name}")


_SPEC_KEYS: dict[str, tuple[str, type[int] | type[float]]] = {
    "apps": ("n_apps", int),
    "minutes": ("minutes", int),
    "seed": ("seed", int),
    "rate_cap": ("rate_cap_per_min", float),
    "bursty": ("bursty_fraction", float),
    "scheduled": ("scheduled_fraction", float),
    "max_functions": ("max_functions_per_app", int),
}


def parse_synth_spec(text: str) -> SynthConfig:
    """``synthetic`` or ``synthetic:key=value,...`` with keys apps, minutes, seed, rate_cap, bursty,
    scheduled, max_functions (see :class:`SynthConfig`). Raises :class:`ConfigError` naming the offending
    key."""
    values = parse_synthetic_spec(text, _SPEC_KEYS, what="synthetic workload")
    for field_name, value in values.items():
        problem = _field_problem(field_name, value)
        if problem:
            key = next(key for key, (name, _) in _SPEC_KEYS.items() if name == field_name)
            raise ConfigError(f"synthetic spec: {key} {problem}")
    return SynthConfig(**values)  # type: ignore[arg-type]


def generate(config: SynthConfig) -> Workload:
    """A minute-count :class:`Workload` drawn from the published Azure Functions characterisation."""
    streams = RandomStreams(config.seed)
    n_apps = config.n_apps

    functions_per_app = _functions_per_app(streams.stream("functions"), n_apps, config.max_functions_per_app)
    function_app = np.repeat(np.arange(n_apps, dtype=np.int64), functions_per_app)
    n_functions = int(function_app.size)
    trigger = _triggers(streams.stream("triggers"), n_functions)

    weight = _trigger_weights()[trigger]
    app_rate = _app_rates_per_min(streams.stream("rates"), config, function_app, weight)
    function_rate = _split_app_rate(streams.stream("split"), app_rate, function_app, weight)

    bursty = _stratified_uniform(streams.stream("burstiness"), n_apps) < config.bursty_fraction
    regularity = streams.stream("regularity")
    scheduled = _stratified_uniform(regularity, n_apps) < config.scheduled_fraction
    smooth_shape = _smooth_shapes(regularity, n_apps)
    follow_up = _follow_up_probabilities(regularity, n_apps)
    counts = _minute_counts(
        streams.stream("arrivals"),
        config,
        function_app,
        trigger,
        function_rate,
        bursty,
        scheduled,
        smooth_shape,
        follow_up,
    )

    mean_ms, percentiles_ms = _durations(streams.stream("durations"), n_functions)
    memory_mb = _app_memory_mb(streams.stream("memory"), n_apps)

    digits = len(str(max(n_apps - 1, 0)))
    app_ids = np.array([f"app{a:0{digits}d}" for a in range(n_apps)], dtype=np.str_)
    within = _ranks_within(functions_per_app)
    function_ids = np.array(
        [f"app{a:0{digits}d}-f{j}" for a, j in zip(function_app.tolist(), within.tolist(), strict=True)],
        dtype=np.str_,
    )
    settings = ", ".join(f"{f.name}={getattr(config, f.name)}" for f in fields(config))
    return Workload(
        name=config.name,
        app_ids=app_ids,
        app_memory_mb=memory_mb,
        function_ids=function_ids,
        function_app=function_app,
        function_trigger=np.asarray(TRIGGERS, dtype=np.str_)[trigger],
        duration_mean_ms=mean_ms,
        duration_percentiles_ms=percentiles_ms,
        minute_counts=counts,
        first_minute=0,
        source="synthetic",
        notes=(f"synthetic Azure-like workload ({settings})",),
    )


# ------------------------------------------------------------------------------------------ structure


def _stratified_uniform(rng: np.random.Generator, n: int) -> FloatArray:
    """One uniform from each of ``n`` equal slices of (0, 1), in random order."""
    return (rng.permutation(n) + rng.random(n)) / n


def _functions_per_app(rng: np.random.Generator, n_apps: int, max_functions: int) -> IntArray:
    u = _stratified_uniform(rng, n_apps)
    sizes = np.arange(6, 11, dtype=np.float64)
    mid = _FUNCTION_COUNT_6_10 * sizes**-2.0 / np.sum(sizes**-2.0)
    pmf = np.concatenate((_FUNCTION_COUNT_PMF_1_5, mid))
    edges = np.cumsum(pmf)
    count = np.searchsorted(edges, u, side="right").astype(np.int64) + 1
    tail = count > 10
    # Continuous Pareto from 11 on, drawn from the same stratified uniform so the tail stays stratified.
    v = (u[tail] - edges[-1]) / _FUNCTION_COUNT_TAIL
    lowest = (11.0 / (max_functions + 1.0)) ** _FUNCTION_TAIL_EXPONENT if max_functions > 10 else 1.0
    survival = np.clip(1.0 - v, lowest, 1.0)
    count[tail] = np.floor(11.0 * survival ** (-1.0 / _FUNCTION_TAIL_EXPONENT)).astype(np.int64)
    return np.minimum(count, max_functions)


def _triggers(rng: np.random.Generator, n_functions: int) -> IntArray:
    edges = np.cumsum(TRIGGER_FUNCTION_SHARE)
    edges[-1] = 1.0
    return np.searchsorted(edges, _stratified_uniform(rng, n_functions), side="right").astype(np.int64)


def _trigger_weights() -> FloatArray:
    weights: FloatArray = np.asarray(TRIGGER_INVOCATION_SHARE) / np.asarray(TRIGGER_FUNCTION_SHARE)
    return weights


def app_rate_quantile_per_day(u: FloatArray, rate_cap_per_min: float) -> FloatArray:
    """The calibrated per-app average rate (invocations per day) at quantile ``u``; see the module doc."""
    cap_day = rate_cap_per_min * MINUTES_PER_DAY
    hourly, minutely = math.log10(24.0), math.log10(float(MINUTES_PER_DAY))
    low = np.interp(u, _LOW_KNOTS_U, _LOW_KNOTS_LOG10)
    x = np.clip((u - _HOURLY_U) / (_MINUTELY_U - _HOURLY_U), 0.0, 1.0)
    band = hourly + (minutely - hourly) * (_BAND_LINEAR * x + (1.0 - _BAND_LINEAR) * x**_BAND_POWER)
    v = np.clip((u - _MINUTELY_U) / (1.0 - _MINUTELY_U), 0.0, 1.0)
    # A cap at or below one per minute leaves no tail to truncate; the final clip then does all the work.
    truncation = (MINUTES_PER_DAY / max(cap_day, MINUTES_PER_DAY * 1.001)) ** _TAIL_EXPONENT
    tail = minutely - np.log10(1.0 - v * (1.0 - truncation)) / _TAIL_EXPONENT
    log_rate = np.where(u < _HOURLY_U, low, np.where(u < _MINUTELY_U, band, tail))
    return np.minimum(10.0**log_rate, cap_day)


def _app_rates_per_min(
    rng: np.random.Generator, config: SynthConfig, function_app: IntArray, weight: FloatArray
) -> FloatArray:
    n_apps = config.n_apps
    rates = np.sort(app_rate_quantile_per_day(_stratified_uniform(rng, n_apps), config.rate_cap_per_min))
    n_functions = np.bincount(function_app, minlength=n_apps)
    mean_weight = np.bincount(function_app, weights=weight, minlength=n_apps) / n_functions
    score = np.log(mean_weight) + _COUPLING_NOISE * rng.standard_normal(n_apps)
    per_app = np.empty(n_apps)
    per_app[np.argsort(score, kind="stable")] = rates
    return per_app / MINUTES_PER_DAY


def _split_app_rate(
    rng: np.random.Generator, app_rate: FloatArray, function_app: IntArray, weight: FloatArray
) -> FloatArray:
    share = weight * np.exp(_SPLIT_SIGMA * rng.standard_normal(function_app.size))
    total = np.bincount(function_app, weights=share, minlength=app_rate.size)
    return app_rate[function_app] * share / total[function_app]


# ------------------------------------------------------------------------------------------- arrivals


def _minute_counts(
    rng: np.random.Generator,
    config: SynthConfig,
    function_app: IntArray,
    trigger: IntArray,
    function_rate: FloatArray,
    bursty: NDArray[np.bool_],
    scheduled: NDArray[np.bool_],
    smooth_shape: FloatArray,
    follow_up: FloatArray,
) -> IntArray:
    """Counts per (function, minute): per-arrival paths feed one bincount, per-minute paths fill rows."""
    n_apps, minutes = config.n_apps, config.minutes
    n_functions = function_app.size
    timer = trigger == _TIMER
    nontimer_rate = np.bincount(function_app[~timer], weights=function_rate[~timer], minlength=n_apps).astype(
        np.float64
    )
    per_minute_app = nontimer_rate > _CELL_PATH_RATE

    function_timer = np.flatnonzero(timer)
    timer_fn, timer_minute = _timer_arrivals(rng, function_rate[function_timer], minutes)
    flat = [function_timer[timer_fn] * minutes + timer_minute]

    event_fn = np.flatnonzero(~timer & ~per_minute_app[function_app])
    per_arrival = ~per_minute_app & (nontimer_rate > 0)
    for process in ("scheduled", "renewal", "bursty"):
        if process == "bursty":
            apps = np.flatnonzero(per_arrival & bursty)
            app_of_event, minute = _bursty_arrivals(rng, nontimer_rate[apps], minutes)
        elif process == "scheduled":
            apps = np.flatnonzero(per_arrival & ~bursty & scheduled)
            app_of_event, minute = _timer_arrivals(rng, nontimer_rate[apps], minutes)
        else:
            apps = np.flatnonzero(per_arrival & ~bursty & ~scheduled)
            app_of_event, minute = _renewal_arrivals(rng, nontimer_rate[apps], smooth_shape[apps], minutes)
        function = _assign_functions(rng, apps[app_of_event], function_app[event_fn], function_rate[event_fn])
        if process != "bursty":
            function, minute = _with_follow_ups(rng, function, minute, follow_up[apps[app_of_event]], minutes)
        flat.append(event_fn[function] * minutes + minute)

    counts = np.bincount(np.concatenate(flat), minlength=n_functions * minutes).reshape(n_functions, minutes)

    cell_fn = np.flatnonzero(~timer & per_minute_app[function_app])
    smooth_fn = cell_fn[~bursty[function_app[cell_fn]]]
    counts[smooth_fn] = _even_counts(rng, function_rate[smooth_fn], minutes)
    bursty_fn = cell_fn[bursty[function_app[cell_fn]]]
    counts[bursty_fn] = _modulated_counts(rng, function_app[bursty_fn], function_rate[bursty_fn], minutes)
    return counts.astype(np.int64, copy=False)


def _timer_arrivals(
    rng: np.random.Generator, rate_per_min: FloatArray, minutes: int
) -> tuple[IntArray, IntArray]:
    """Strictly periodic firings; returns (index into the timer functions, minute) per firing."""
    wanted_s = 60.0 / np.maximum(rate_per_min, 1e-12)
    nearest = np.abs(np.log(wanted_s)[:, None] - np.log(_TIMER_PERIODS_S)[None, :]).argmin(axis=1)
    period_s = _TIMER_PERIODS_S[nearest]
    phase_s = rng.random(period_s.size) * period_s
    horizon_s = minutes * 60.0
    fits = np.floor((horizon_s - phase_s) / period_s) + 1
    firings = np.where(phase_s < horizon_s, fits, 0).astype(np.int64)
    which = np.repeat(np.arange(period_s.size, dtype=np.int64), firings)
    k = _ranks_within(firings)
    at_s = phase_s[which] + k * period_s[which]
    minute = np.minimum(np.floor(at_s / 60.0).astype(np.int64), minutes - 1)
    return which, minute


def _smooth_shapes(rng: np.random.Generator, n: int) -> FloatArray:
    low, high = _SMOOTH_SHAPE_RANGE
    return np.exp(rng.uniform(math.log(low), math.log(high), size=n))


def _follow_up_probabilities(rng: np.random.Generator, n: int) -> FloatArray:
    low, high = _FOLLOW_UP_RANGE
    return np.exp(rng.uniform(math.log(low), math.log(high), size=n))


def _with_follow_ups(
    rng: np.random.Generator, function: IntArray, minute: IntArray, probability: FloatArray, minutes: int
) -> tuple[IntArray, IntArray]:
    """Each arrival, with its app's ``probability``, brings a second one to the same function in the same
    or the next minute (a retry, a chained call); follow-ups past the trace's end are dropped."""
    echo = rng.random(function.size) < probability
    later = minute[echo] + rng.integers(0, _FOLLOW_UP_MINUTES, size=int(echo.sum()))
    inside = later < minutes
    return (
        np.concatenate((function, function[echo][inside])),
        np.concatenate((minute, later[inside])),
    )


def _renewal_arrivals(
    rng: np.random.Generator, rate_per_min: FloatArray, shape: FloatArray, minutes: int
) -> tuple[IntArray, IntArray]:
    """Stationary gamma renewal processes, one per app with its own ``shape``; returns (index into the
    apps, minute) per arrival."""
    expected = rate_per_min * minutes
    # Draw enough gaps to pass the horizon with overwhelming probability; the surplus is discarded.
    sd = np.sqrt(expected / shape)
    draws = np.ceil(expected + _RENEWAL_MARGIN_SD * sd + _RENEWAL_MARGIN_SD).astype(np.int64)
    which = np.repeat(np.arange(rate_per_min.size, dtype=np.int64), draws)
    first = _segment_starts(draws)
    gaps = rng.gamma(shape[which], 1.0)
    # Stationarity: the gap straddling time 0 is length-biased (gamma with one more unit of shape), and
    # time 0 falls uniformly inside it.
    gaps[first] = rng.gamma(shape + 1.0, 1.0) * rng.random(first.size)
    gaps /= (shape * rate_per_min)[which]
    time = _segmented_cumsum(gaps, draws)
    keep = time < minutes
    return which[keep], time[keep].astype(np.int64)


def _bursty_arrivals(
    rng: np.random.Generator, rate_per_min: FloatArray, minutes: int
) -> tuple[IntArray, IntArray]:
    """Gamma-modulated Poisson arrivals per block; returns (index into the apps, minute) per arrival."""
    block = _block_minutes(rng, rate_per_min.size)
    n_blocks = np.ceil(minutes / block).astype(np.int64)
    which = np.repeat(np.arange(rate_per_min.size, dtype=np.int64), n_blocks)
    start = _ranks_within(n_blocks) * block[which]
    length = np.minimum(block[which], minutes - start)
    intensity = _normalised_modulation(rng, which, length, rate_per_min.size)
    per_block = rng.poisson(rate_per_min[which] * length * intensity)
    event_block = np.repeat(np.arange(which.size, dtype=np.int64), per_block)
    time = start[event_block] + rng.random(event_block.size) * length[event_block]
    minute = np.minimum(time.astype(np.int64), minutes - 1)
    return which[event_block], minute


def _assign_functions(
    rng: np.random.Generator, event_app: IntArray, function_app: IntArray, function_rate: FloatArray
) -> IntArray:
    """Pick each arrival's function within its app in proportion to the functions' rates.

    ``function_app`` must be non-decreasing. Keys ``app + cumulative share within the app`` increase
    across the whole array, so one searchsorted serves every app at once.
    """
    if event_app.size == 0:
        return np.zeros(0, dtype=np.int64)
    n_apps = int(function_app.max()) + 1
    total = np.bincount(function_app, weights=function_rate, minlength=n_apps)
    # Shares rather than rates, so the running sum grows by at most 1 per app and keeps its precision.
    share = function_rate / np.where(total > 0, total, 1.0)[function_app]
    key = function_app + _segmented_cumsum(share, np.bincount(function_app, minlength=n_apps))
    # The last function of each app must close its interval exactly despite rounding.
    last = np.r_[function_app[1:] != function_app[:-1], True]
    key[last] = function_app[last] + 1.0
    picked = np.searchsorted(key, event_app + rng.random(event_app.size), side="right")
    return np.minimum(picked, function_app.size - 1).astype(np.int64)


def _even_counts(rng: np.random.Generator, rate_per_min: FloatArray, minutes: int) -> IntArray:
    """Deterministic counts spreading each rate evenly over the minutes, with a random phase."""
    phase = rng.random(rate_per_min.size)[:, None]
    edges = np.floor(rate_per_min[:, None] * np.arange(minutes + 1, dtype=np.float64)[None, :] + phase)
    return np.diff(edges, axis=1).astype(np.int64)


def _modulated_counts(
    rng: np.random.Generator, function_app: IntArray, rate_per_min: FloatArray, minutes: int
) -> IntArray:
    """Poisson counts under a per-app gamma modulation held constant over blocks of minutes."""
    if function_app.size == 0:
        return np.zeros((0, minutes), dtype=np.int64)
    apps, local = np.unique(function_app, return_inverse=True)
    block = np.maximum(np.round(_block_minutes(rng, apps.size)), 1).astype(np.int64)
    n_blocks = -(-minutes // block)
    app_of_block = np.repeat(np.arange(apps.size, dtype=np.int64), n_blocks)
    block_index = _ranks_within(n_blocks)
    length = np.minimum(block[app_of_block], minutes - block_index * block[app_of_block]).astype(np.float64)
    intensity = np.zeros((apps.size, int(n_blocks.max())))
    intensity[app_of_block, block_index] = _normalised_modulation(rng, app_of_block, length, apps.size)
    block_of_minute = np.arange(minutes)[None, :] // block[:, None]
    modulation = np.take_along_axis(intensity, block_of_minute, axis=1)
    return rng.poisson(rate_per_min[:, None] * modulation[local]).astype(np.int64)


def _normalised_modulation(
    rng: np.random.Generator, app_of_block: IntArray, length: FloatArray, n_apps: int
) -> FloatArray:
    """Gamma(0.1) block factors rescaled so each app's length-weighted mean is exactly 1.

    Without the rescaling a bursty app's day total would swing with a handful of gamma draws, blurring the
    calibrated rate distribution; with it, burstiness moves arrivals in time and only Poisson noise is left
    on the total.
    """
    factor = rng.gamma(_BURST_SHAPE, 1.0, size=app_of_block.size)
    # A tiny floor keeps an app whose draws all underflow from dividing by zero.
    factor = np.maximum(factor, 1e-300)
    weighted = np.bincount(app_of_block, weights=factor * length, minlength=n_apps)
    horizon = np.bincount(app_of_block, weights=length, minlength=n_apps)
    return factor * (horizon / weighted)[app_of_block]


def _block_minutes(rng: np.random.Generator, n: int) -> FloatArray:
    low, high = _BURST_BLOCK_MINUTES
    return np.exp(rng.uniform(math.log(low), math.log(high), size=n))


# ------------------------------------------------------------------------------------ resource shape


def _durations(rng: np.random.Generator, n_functions: int) -> tuple[FloatArray, FloatArray]:
    z = _normal_quantile(_stratified_uniform(rng, n_functions))
    mean_ms = np.clip(1000.0 * np.exp(_DURATION_LOG_MEAN_S + _DURATION_LOG_SIGMA_S * z), *_DURATION_RANGE_MS)
    spread = _SPREAD_MEDIAN * np.exp(_SPREAD_SIGMA * rng.standard_normal(n_functions))
    spread = np.clip(spread, 0.0, _SPREAD_MAX)
    levels = np.clip(np.asarray(DURATION_PERCENTILES) / 100.0, _EXTREME_LEVEL, 1.0 - _EXTREME_LEVEL)
    zq = _normal_quantile(levels)
    # Log-normal with mean held at mean_ms: median = mean * exp(-sigma^2 / 2).
    log_median = np.log(mean_ms) - spread**2 / 2.0
    return mean_ms, np.exp(log_median[:, None] + spread[:, None] * zq[None, :])


def _app_memory_mb(rng: np.random.Generator, n_apps: int) -> FloatArray:
    u = _stratified_uniform(rng, n_apps)
    memory = _BURR_LAMBDA_MB * ((1.0 - u) ** (-1.0 / _BURR_K) - 1.0) ** (1.0 / _BURR_C)
    return np.clip(memory, *_MEMORY_RANGE_MB)


def _normal_quantile(u: FloatArray) -> FloatArray:
    z: FloatArray = np.asarray(ndtri(u), dtype=np.float64)
    return z


# ------------------------------------------------------------------------------------------- segments


def _segment_starts(lengths: IntArray) -> IntArray:
    """Offset of each segment's first element in the concatenation (segments may be empty)."""
    return (np.cumsum(lengths) - lengths).astype(np.int64)


def _ranks_within(lengths: IntArray) -> IntArray:
    """0, 1, ..., len-1 for each segment in turn, concatenated."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(_segment_starts(lengths), lengths)


def _segmented_cumsum(values: FloatArray, lengths: IntArray) -> FloatArray:
    """Cumulative sums restarting at each segment (segments may be empty)."""
    running: FloatArray = np.concatenate(([0.0], np.cumsum(values)))
    return running[1:] - np.repeat(running[_segment_starts(lengths)], lengths)
