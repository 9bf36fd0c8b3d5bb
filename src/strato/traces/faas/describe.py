"""Characterise a workload with the figures of the Azure Functions paper (Shahrad et al., ATC 2020).

:func:`describe` measures what section 3 of the paper reports, so a real trace, a sample of it and a
synthetic workload can be compared with the published values (:func:`format_characterisation` prints them
side by side). Rules, where the paper leaves room:

* Rates are averages over the whole trace, invocations / trace duration (the paper's Fig. 5). Every app of
  the workload counts, including apps never invoked in it: they are invoked at most once per hour.
* The top-18.6 % share interpolates linearly at the boundary app (:func:`strato.core.stats.top_share`).
* Inter-arrival times (IATs) are those of the arrivals ``workload.expand(seed=seed)`` produces: per-minute
  counts spread uniformly inside their minute, so the CV of an app invoked several times a minute reflects
  that spreading. An app gets a CV only with at least :data:`MIN_INTERARRIVALS` IATs (four invocations)
  and a positive mean IAT; the CV is the population standard deviation over the mean (``ddof=0``, as
  :func:`strato.core.stats.cv`).
* Trigger shares are over functions and over invocations; triggers the paper does not name (e.g.
  ``unknown`` in the sampled traces) are listed after the paper's seven.
* Function durations: the median of the per-function averages. Memory: quantiles of the per-app values.

:func:`idle_structure` measures what a keep-alive policy sees of each app: its idle times (end of its
last running execution to its next invocation, as the simulators define them, on ``expand(seed=seed)``),
summarised over apps with at least :data:`MIN_IDLE_TIMES` of them: the distribution over apps of their
idle-time CV, 5th and 99th percentiles (the hybrid policy's head and tail), and the share of *timer-like*
apps, those with at least 90 % of their idle times within a minute of their median idle time and that
median at least a minute (spreading minute counts inside their minute blurs a strict period by up to a
minute either way; the one-minute floor keeps busy Poisson apps out). :func:`format_idle_structures`
prints several workloads side by side, e.g. a real trace and the generator's output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from strato.core.stats import top_share
from strato.traces.faas.idle import IdleProfile
from strato.traces.faas.model import MICROS, Workload, _spread_minutes

__all__ = [
    "IDLE_QUANTILES",
    "MIN_IDLE_TIMES",
    "MIN_INTERARRIVALS",
    "PAPER",
    "TOP_APPS_FRACTION",
    "Characterisation",
    "IdleStructure",
    "TriggerShare",
    "describe",
    "format_characterisation",
    "format_idle_structures",
    "idle_structure",
]

MIN_INTERARRIVALS = 3
"""Fewest inter-arrival times an app needs for its CV to count (fewer say little about burstiness)."""

MIN_IDLE_TIMES = 10
"""Fewest idle times an app needs to count in :func:`idle_structure` (its p5 and p99 need a few)."""

IDLE_QUANTILES: tuple[float, ...] = (10.0, 25.0, 50.0, 75.0, 90.0)
"""Where :class:`IdleStructure` reads each per-app statistic's distribution over apps."""

_TIMER_LIKE_SHARE = 0.9
_TIMER_LIKE_WIDTH_MIN = 1.0

TOP_APPS_FRACTION = 0.186
"""The paper's "most popular 18.6 % of apps"."""

_PAPER_TRIGGERS: dict[str, tuple[float, float]] = {
    "http": (0.55, 0.36),
    "queue": (0.15, 0.34),
    "event": (0.02, 0.25),
    "orchestration": (0.07, 0.02),
    "timer": (0.16, 0.02),
    "storage": (0.03, 0.01),
    "others": (0.02, 0.01),
}


def _burr_quantile(q: float, c: float = 11.652, k: float = 0.221, scale: float = 107.083) -> float:
    """Quantile of the paper's Burr XII fit of app average memory (MB)."""
    return float(scale * ((1.0 - q) ** (-1.0 / k) - 1.0) ** (1.0 / c))


PAPER: dict[str, float] = {
    "share_apps_at_most_hourly": 0.45,
    "share_apps_at_most_per_minute": 0.81,
    "share_invocations_top_apps": 0.996,
    "share_apps_cv_above_1": 0.40,
    "share_apps_single_function": 0.54,
    "share_apps_at_most_10_functions": 0.95,
    "rate_orders_of_magnitude": 8.0,
    # Median of the paper's log-normal fit of function average durations (log-mean -0.38 s).
    "median_function_duration_s": math.exp(-0.38),
    # Quantiles of the paper's Burr XII fit of app average memory.
    "app_memory_median_mb": _burr_quantile(0.5),
    "app_memory_p90_mb": _burr_quantile(0.9),
}
"""The published figures, keyed like :class:`Characterisation` fields (shares as fractions)."""


@dataclass(frozen=True)
class TriggerShare:
    """One trigger type's share of the functions and of the invocations (fractions)."""

    trigger: str
    function_share: float
    invocation_share: float


@dataclass(frozen=True)
class Characterisation:
    """The paper's figures measured on one workload; shares are fractions in [0, 1], NaN when undefined."""

    name: str
    n_apps: int
    n_functions: int
    n_apps_invoked: int
    invocations: int
    duration_hours: float
    share_apps_at_most_hourly: float
    share_apps_at_most_per_minute: float
    share_invocations_top_apps: float
    rate_orders_of_magnitude: float
    """log10 of the busiest over the quietest invoked app's invocation count."""
    n_apps_with_cv: int
    share_apps_cv_above_1: float
    median_cv_timer_apps: float
    """Median IAT CV over apps whose functions are all timer-triggered (the paper: about 0)."""
    share_apps_single_function: float
    share_apps_at_most_10_functions: float
    triggers: tuple[TriggerShare, ...]
    median_function_duration_s: float
    app_memory_median_mb: float
    app_memory_p90_mb: float

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values; triggers become ``{name: {"functions": f, "invocations": i}}``."""
        data = asdict(self)
        data["triggers"] = {
            t.trigger: {"functions": t.function_share, "invocations": t.invocation_share}
            for t in self.triggers
        }
        return data


@dataclass(frozen=True)
class IdleStructure:
    """Per-app idle-time structure of one workload (see the module docstring); minutes, NaN if no app."""

    name: str
    n_apps: int
    n_apps_measured: int
    """Apps with at least :data:`MIN_IDLE_TIMES` idle times; every other figure is over these."""
    share_timer_like: float
    share_cv_above_1: float
    cv: tuple[float, ...]
    """Quantiles (at :data:`IDLE_QUANTILES`) over apps of each app's idle-time CV."""
    p5_min: tuple[float, ...]
    """Quantiles over apps of each app's 5th-percentile idle time, in minutes."""
    p99_min: tuple[float, ...]
    """Quantiles over apps of each app's 99th-percentile idle time, in minutes."""

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["quantiles"] = list(IDLE_QUANTILES)
        return data


def idle_structure(workload: Workload, *, seed: int = 0) -> IdleStructure:
    """Measure the per-app idle-time structure of ``workload``; see the module docstring."""
    # The simulators' own definition of an idle time, so the figures describe what the policies see.

    profile = IdleProfile.from_invocations(workload.expand(seed=seed))
    cv, p5, p99, timer_like = [], [], [], []
    for app in np.flatnonzero(np.diff(profile.gap_bounds) >= MIN_IDLE_TIMES):
        minutes = profile.gap_us[profile.gap_bounds[app] : profile.gap_bounds[app + 1]] / 60e6
        median = float(np.median(minutes))
        cv.append(float(np.std(minutes) / np.mean(minutes)))
        low, high = np.percentile(minutes, [5.0, 99.0])
        p5.append(float(low))
        p99.append(float(high))
        near = np.mean(np.abs(minutes - median) <= _TIMER_LIKE_WIDTH_MIN)
        timer_like.append(median >= _TIMER_LIKE_WIDTH_MIN and near >= _TIMER_LIKE_SHARE)
    return IdleStructure(
        name=workload.name,
        n_apps=workload.n_apps,
        n_apps_measured=len(cv),
        share_timer_like=_share(np.asarray(timer_like, dtype=np.bool_)),
        share_cv_above_1=_share(np.asarray(cv) > 1.0),
        cv=_quantiles(cv),
        p5_min=_quantiles(p5),
        p99_min=_quantiles(p99),
    )


def _quantiles(values: list[float]) -> tuple[float, ...]:
    if not values:
        return tuple(math.nan for _ in IDLE_QUANTILES)
    return tuple(float(q) for q in np.percentile(values, IDLE_QUANTILES))


def format_idle_structures(structures: list[IdleStructure]) -> str:
    """A text table with one column per workload, one row per figure."""
    rows: list[list[str]] = [
        ["apps (measured)", *(f"{s.n_apps:,} ({s.n_apps_measured:,})" for s in structures)],
        ["timer-like apps", *(_pct(s.share_timer_like) for s in structures)],
        ["apps with idle-time CV > 1", *(_pct(s.share_cv_above_1) for s in structures)],
    ]
    for label, attribute, spec in (
        ("idle-time CV", "cv", ".2f"),
        ("p5 idle time, min", "p5_min", ".2f"),
        ("p99 idle time, min", "p99_min", ".1f"),
    ):
        for index, q in enumerate(IDLE_QUANTILES):
            rows.append(
                [
                    f"{label}: p{q:g} over apps",
                    *(_num(getattr(s, attribute)[index], spec) for s in structures),
                ]
            )
    header = ["per-app idle times", *(s.name for s in structures)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = [
            row[0].ljust(widths[0]),
            *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def describe(workload: Workload, *, seed: int = 0) -> Characterisation:
    """Measure ``workload`` the way the paper characterises Azure Functions; see the module docstring."""
    n_apps, n_functions = workload.n_apps, workload.n_functions
    hours = workload.duration_s / 3600.0
    function_counts = workload.invocation_counts()
    app_counts = np.bincount(workload.function_app, weights=function_counts, minlength=n_apps)
    app_counts = app_counts.astype(np.int64)
    invocations = int(function_counts.sum())
    invoked = app_counts > 0

    functions_per_app = np.bincount(workload.function_app, minlength=n_apps)

    cv, has_cv = _interarrival_cv(workload, app_counts, seed)
    not_timer = np.bincount(
        workload.function_app, weights=workload.function_trigger != "timer", minlength=n_apps
    )
    timer_only = (not_timer == 0) & (functions_per_app > 0)
    timer_cv = cv[has_cv & timer_only]

    span = math.log10(app_counts.max() / app_counts[invoked].min()) if invoked.any() else math.nan
    durations_s = workload.duration_mean_ms / 1000.0
    return Characterisation(
        name=workload.name,
        n_apps=n_apps,
        n_functions=n_functions,
        n_apps_invoked=int(invoked.sum()),
        invocations=invocations,
        duration_hours=hours,
        share_apps_at_most_hourly=_share(app_counts <= hours),
        share_apps_at_most_per_minute=_share(app_counts <= 60.0 * hours),
        share_invocations_top_apps=float(top_share(app_counts, TOP_APPS_FRACTION)) if n_apps else math.nan,
        rate_orders_of_magnitude=span,
        n_apps_with_cv=int(has_cv.sum()),
        share_apps_cv_above_1=_share(cv[has_cv] > 1.0),
        median_cv_timer_apps=float(np.median(timer_cv)) if timer_cv.size else math.nan,
        share_apps_single_function=_share(functions_per_app == 1),
        share_apps_at_most_10_functions=_share(functions_per_app <= 10),
        triggers=_trigger_shares(workload.function_trigger, function_counts),
        median_function_duration_s=float(np.median(durations_s)) if n_functions else math.nan,
        app_memory_median_mb=float(np.median(workload.app_memory_mb)) if n_apps else math.nan,
        app_memory_p90_mb=float(np.quantile(workload.app_memory_mb, 0.9)) if n_apps else math.nan,
    )


def _share(mask: NDArray[np.bool_]) -> float:
    return float(mask.mean()) if mask.size else math.nan


def _app_grouped_arrivals(workload: Workload, seed: int) -> NDArray[np.int64]:
    """Every arrival time, grouped by app in app order and sorted within each app.

    Differences between neighbours inside an app's group are its IATs; across a group boundary they mean
    nothing. The arrivals are exactly those of ``workload.expand(seed=seed)``: the same spreading, fed by
    the same random stream. Only the sorting differs: expand's two-key lexsort costs about ten times a
    stable sort of one combined ``app * horizon + arrival`` key, and the IATs need nothing else.
    """
    if workload.minute_counts is not None:
        function, arrival_us = _spread_minutes(workload.minute_counts, np.random.default_rng(seed))
        horizon_us = workload.minute_counts.shape[1] * 60 * MICROS
    else:
        assert workload.events is not None
        function = workload.events[0].astype(np.int64)
        arrival_us = np.round(workload.events[1] * MICROS).astype(np.int64)
        # Only differences matter; a shift keeps the combined key non-negative.
        arrival_us -= int(arrival_us.min(initial=0))
        horizon_us = int(arrival_us.max(initial=0)) + 1
    app = workload.function_app[function]
    del function
    if workload.n_apps * float(horizon_us) < 2.0**62:
        key = app * np.int64(horizon_us) + arrival_us
        key.sort(kind="stable")
        return key
    # A trace too long for a combined int64 key falls back to the two-key sort.
    return arrival_us[np.lexsort((arrival_us, app))]


def _interarrival_cv(
    workload: Workload, app_counts: NDArray[np.int64], seed: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Per-app IAT CV and whether it is defined (enough IATs, positive mean).

    Works on segments of the app-grouped arrivals with np.add.reduceat: each invoked app's segment holds
    its IATs followed by the meaningless gap to the next app, which is zeroed.
    """
    n_apps = workload.n_apps
    cv = np.full(n_apps, np.nan)
    invoked = np.flatnonzero(app_counts > 0)
    if invoked.size == 0:
        return cv, np.zeros(n_apps, dtype=np.bool_)
    counts = app_counts[invoked]
    starts = np.cumsum(counts) - counts
    ends = starts + counts - 1
    stamps = _app_grouped_arrivals(workload, seed)
    gaps = np.empty(stamps.size, dtype=np.float64)
    np.subtract(stamps[1:], stamps[:-1], out=gaps[:-1])
    del stamps
    gaps[ends] = 0.0
    n_gaps = counts - 1
    mean = np.add.reduceat(gaps, starts) / np.maximum(n_gaps, 1)
    # Two passes (deviations from the mean) rather than E[x^2] - E[x]^2, which cancels catastrophically
    # for the near-periodic apps whose CV ~ 0 is one of the figures.
    gaps -= np.repeat(mean, counts)
    gaps[ends] = 0.0
    np.square(gaps, out=gaps)
    variance = np.add.reduceat(gaps, starts) / np.maximum(n_gaps, 1)
    defined = (n_gaps >= MIN_INTERARRIVALS) & (mean > 0)
    has_cv = np.zeros(n_apps, dtype=np.bool_)
    has_cv[invoked[defined]] = True
    cv[invoked[defined]] = np.sqrt(variance[defined]) / mean[defined]
    return cv, has_cv


def _trigger_shares(
    trigger: NDArray[np.str_], function_counts: NDArray[np.int64]
) -> tuple[TriggerShare, ...]:
    names, index = np.unique(trigger, return_inverse=True)
    n_functions = np.bincount(index, minlength=names.size)
    n_invocations = np.bincount(index, weights=function_counts, minlength=names.size)
    total_functions, total_invocations = int(trigger.size), float(function_counts.sum())
    present = {str(name): i for i, name in enumerate(names)}
    ordered = [t for t in _PAPER_TRIGGERS if t in present] + sorted(set(present) - set(_PAPER_TRIGGERS))
    return tuple(
        TriggerShare(
            trigger=name,
            function_share=n_functions[present[name]] / total_functions,
            invocation_share=(
                n_invocations[present[name]] / total_invocations if total_invocations > 0 else math.nan
            ),
        )
        for name in ordered
    )


def format_characterisation(c: Characterisation) -> str:
    """A text table (under 80 columns) of every figure next to the paper's value."""
    rows: list[tuple[str, str, str]] = [
        ("apps / functions", f"{c.n_apps:,} / {c.n_functions:,}", ""),
        ("apps invoked", f"{c.n_apps_invoked:,}", ""),
        ("invocations", f"{c.invocations:,}", ""),
        ("trace duration", f"{c.duration_hours:.1f} h", "two weeks"),
        ("apps invoked <= once an hour", *_vs_paper(c, "share_apps_at_most_hourly")),
        ("apps invoked <= once a minute", *_vs_paper(c, "share_apps_at_most_per_minute")),
        (
            f"invocations by top {100 * TOP_APPS_FRACTION:.1f} % of apps",
            *_vs_paper(c, "share_invocations_top_apps"),
        ),
        ("app rate span (orders of magnitude)", _num(c.rate_orders_of_magnitude, ".1f"), "~8 (two weeks)"),
        (f"apps with >= {MIN_INTERARRIVALS} IATs (CV defined)", f"{c.n_apps_with_cv:,}", ""),
        ("  of which IAT CV > 1", *_vs_paper(c, "share_apps_cv_above_1")),
        ("median IAT CV of timer-only apps", _num(c.median_cv_timer_apps, ".2f"), "~0"),
        ("apps with 1 function", *_vs_paper(c, "share_apps_single_function")),
        ("apps with <= 10 functions", *_vs_paper(c, "share_apps_at_most_10_functions")),
    ]
    for t in c.triggers:
        paper = _PAPER_TRIGGERS.get(t.trigger)
        rows.append(
            (
                f"trigger {t.trigger}: % fn / % inv",
                f"{_pct(t.function_share)} / {_pct(t.invocation_share)}",
                f"{_pct(paper[0], 0)} / {_pct(paper[1], 0)}" if paper else "-",
            )
        )
    rows += [
        (
            "median function average duration",
            f"{c.median_function_duration_s:.2f} s",
            f"{PAPER['median_function_duration_s']:.2f} s (50 % < 1 s)",
        ),
        (
            "app memory median / p90",
            f"{c.app_memory_median_mb:.0f} / {c.app_memory_p90_mb:.0f} MB",
            f"{PAPER['app_memory_median_mb']:.0f} / {PAPER['app_memory_p90_mb']:.0f} MB (fit)",
        ),
    ]
    header = ("figure", "measured", "paper")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = [f"Characterisation of {c.name}"]
    for i, row in enumerate([header, *rows]):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _vs_paper(c: Characterisation, key: str) -> tuple[str, str]:
    value = getattr(c, key)
    assert isinstance(value, float)
    return _pct(value), _paper_pct(key)


def _num(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def _pct(value: float, decimals: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.{decimals}f} %"


def _paper_pct(key: str) -> str:
    return _pct(PAPER[key], 1 if PAPER[key] > 0.99 else 0)
