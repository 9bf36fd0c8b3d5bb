"""The keep-alive experiment: run a set of policies on one workload and compare them as the paper does.

Reproducing the paper needs history: its policies were judged on two weeks of a trace whose first days
trained the histograms. Two knobs give a short trace that history:

* ``repeat``: the trace is replayed ``repeat`` times back to back, copy ``k`` shifted by ``k`` horizons
  (the same arrivals and durations each time; an execution running past a copy's end overlaps the next);
* ``warmup_s``: policies learn from everything, but the metrics count only what happens from the
  warm-up's end ``W`` on. Precisely: an invocation (and its cold start, and any eviction it causes) counts
  iff it arrives at or after ``W``; an application counts in the per-app percentiles iff it is invoked at
  or after ``W``; wasted memory counts the part of each loaded-idle interval that lies after ``W`` (an
  app loaded and idle from ``W - 5 min`` to ``W + 10 min`` wastes 10 minutes of its memory).

Both are carried out outside the engines: a repeat is a longer :class:`Invocations`, and a warm-up is the
full run less a run on the invocations that arrive before ``W`` with ``W`` as the horizon
(:meth:`PolicyResult.after`). Both engines are causal and count loaded-idle time up to the horizon, so
the difference is exact for either engine, with or without a memory capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

from strato.core.report import new_figure
from strato.core.units import format_duration
from strato.errors import ConfigError
from strato.faas.policies import PAPER_POLICY_SET, KeepAlivePolicy, parse_policy
from strato.faas.policies.hybrid import RULES, HybridHistogram
from strato.faas.results import BASELINE_POLICY, KeepAliveRow, PolicyResult, summarise
from strato.faas.simulator import simulate
from strato.traces.faas.idle import IdleProfile
from strato.traces.faas.model import DurationMode, Invocations, Workload


@dataclass(frozen=True)
class RuleCounts:
    """Which rule of a hybrid policy decided its idle periods (indices as in :data:`hybrid.RULES`)."""

    policy: str
    decisions: tuple[int, ...]
    """Idle periods decided by each rule."""
    apps: tuple[int, ...]
    """Applications with at least one idle period decided by each rule."""

    def decision_shares(self) -> dict[str, float]:
        total = sum(self.decisions)
        return {rule: n / total if total else 0.0 for rule, n in zip(RULES, self.decisions, strict=True)}


@dataclass(frozen=True)
class KeepAliveComparison:
    workload: str
    results: list[PolicyResult]
    """Per policy, what was counted (after the warm-up)."""
    rows: list[KeepAliveRow]
    """One summary per policy, in the order asked, wasted memory normalised to fixed 10 min = 100."""
    repeat: int = 1
    warmup_s: float = 0.0
    measured_s: float = 0.0
    """Length of the counted period: the repeated trace's horizon less the warm-up."""
    rules: tuple[RuleCounts, ...] = ()
    """For each hybrid policy asked, when ``count_rules`` was set: which rule made its decisions."""

    def row(self, policy: str) -> KeepAliveRow:
        for row in self.rows:
            if row.policy == policy:
                return row
        raise KeyError(policy)

    @property
    def title(self) -> str:
        """The workload and how it was replayed, e.g. ``raw-format-100-8h x3, 16h warm-up``."""
        parts = [self.workload + (f" x{self.repeat}" if self.repeat > 1 else "")]
        if self.warmup_s > 0:
            parts.append(f"{format_duration(self.warmup_s)} warm-up")
        return ", ".join(parts)


def repeat_invocations(invocations: Invocations, times: int) -> Invocations:
    """``invocations`` replayed ``times`` times back to back, copy ``k`` shifted by ``k`` horizons."""
    if times < 1:
        raise ConfigError(f"repeat must be at least 1, got {times}")
    if times == 1:
        return invocations
    horizon = invocations.horizon_us
    shift = np.repeat(np.arange(times, dtype=np.int64) * horizon, len(invocations))
    app = np.tile(invocations.app, times)
    # Every arrival of a copy precedes the next copy's, so a stable sort by app alone keeps each app's
    # arrivals in time order.
    order = np.argsort(app, kind="stable")
    return Invocations(
        app=app[order],
        function=np.tile(invocations.function, times)[order],
        arrival_us=(np.tile(invocations.arrival_us, times) + shift)[order],
        duration_us=np.tile(invocations.duration_us, times)[order],
        n_apps=invocations.n_apps,
        horizon_us=horizon * times,
    )


def invocations_before(invocations: Invocations, end_us: int) -> Invocations:
    """The invocations arriving before ``end_us``, with ``end_us`` as the horizon."""
    return invocations.subset(invocations.arrival_us < end_us, horizon_us=end_us)


def check_warmup(warmup_us: int, horizon_us: int) -> None:
    """Refuse a warm-up that leaves nothing to measure (what a user asks for; the engines accept it)."""
    if warmup_us >= horizon_us:
        raise ConfigError(
            f"a warm-up of {format_duration(warmup_us / 1e6)} leaves nothing to measure of the "
            f"{format_duration(horizon_us / 1e6)} simulated (the trace times its repeats); "
            "shorten it or repeat the trace more often"
        )


def simulate_after_warmup(
    invocations: Invocations,
    app_memory_mb: NDArray[np.float64],
    policies: Sequence[KeepAlivePolicy],
    *,
    warmup_us: int,
    capacity_mb: float | None = None,
    cold_start_s: float = 1.0,
    show_progress: bool | None = None,
) -> list[PolicyResult]:
    """Each policy's result counting only what happens from ``warmup_us`` on (see the module docstring)."""
    if warmup_us < 0:
        raise ConfigError(f"the warm-up must not be negative, got {warmup_us} µs")

    def run(replayed: Invocations) -> list[PolicyResult]:
        return simulate(
            replayed,
            app_memory_mb,
            policies,
            capacity_mb=capacity_mb,
            cold_start_s=cold_start_s,
            show_progress=show_progress,
        )

    results = run(invocations)
    if warmup_us == 0:
        return results
    prefix = run(invocations_before(invocations, warmup_us))
    return [full.after(before) for full, before in zip(results, prefix, strict=True)]


def hybrid_rule_counts(
    invocations: Invocations, policy: HybridHistogram, *, warmup_us: int = 0
) -> RuleCounts:
    """Count the rules behind the policy's decisions on idle periods that begin at or after ``warmup_us``.

    One decision per idle period: every completed one, and the one still open at the horizon. As for the
    metrics, the count is the full run's less the warm-up prefix's.
    """

    def per_app(replayed: Invocations) -> NDArray[np.int64]:
        profile = IdleProfile.from_invocations(replayed)
        counts = np.zeros((profile.n_apps, len(RULES)), dtype=np.int64)
        for app in np.flatnonzero(profile.app_invocations):
            gaps = profile.gap_us[profile.gap_bounds[app] : profile.gap_bounds[app + 1]]
            _, _, rule = policy.batch_decisions(gaps)
            # The last decision governs the open idle period, which exists only if the app is idle then.
            counts[app] = np.bincount(rule if profile.tail_us[app] > 0 else rule[:-1], minlength=len(RULES))
        return counts

    counts = per_app(invocations)
    if warmup_us > 0:
        counts -= per_app(invocations_before(invocations, warmup_us))
    return RuleCounts(
        policy.name,
        decisions=tuple(int(x) for x in counts.sum(axis=0)),
        apps=tuple(int(x) for x in np.count_nonzero(counts, axis=0)),
    )


def compare_policies(
    workload: Workload,
    specs: Sequence[str] = PAPER_POLICY_SET,
    *,
    seed: int = 0,
    durations: DurationMode = "sampled",
    capacity_mb: float | None = None,
    cold_start_s: float = 1.0,
    repeat: int = 1,
    warmup_s: float = 0.0,
    count_rules: bool = False,
    show_progress: bool | None = None,
) -> KeepAliveComparison:
    """Simulate every policy in ``specs`` on ``workload`` (plus fixed 10 min for the normalisation).

    ``repeat`` and ``warmup_s`` are described in the module docstring; ``count_rules`` also counts which
    rule made each hybrid policy's decisions after the warm-up (:func:`hybrid_rule_counts`).
    """
    if not specs:
        raise ConfigError("no policy to simulate")
    policies: list[KeepAlivePolicy] = [parse_policy(spec) for spec in specs]
    names = [policy.name for policy in policies]
    if len(set(names)) != len(names):
        raise ConfigError(f"the same policy is listed twice: {', '.join(names)}")
    if BASELINE_POLICY not in names:
        policies.append(parse_policy(BASELINE_POLICY))
    invocations = repeat_invocations(workload.expand(seed=seed, durations=durations), repeat)
    warmup_us = round(warmup_s * 1e6)
    check_warmup(warmup_us, invocations.horizon_us)
    results = simulate_after_warmup(
        invocations,
        workload.app_memory_mb,
        policies,
        warmup_us=warmup_us,
        capacity_mb=capacity_mb,
        cold_start_s=cold_start_s,
        show_progress=show_progress,
    )
    baseline = next(r for r in results if r.policy == BASELINE_POLICY)
    asked = results[: len(names)]
    rules = tuple(
        hybrid_rule_counts(invocations, policy, warmup_us=warmup_us)
        for policy in policies[: len(names)]
        if count_rules and isinstance(policy, HybridHistogram)
    )
    return KeepAliveComparison(
        workload=workload.name,
        results=asked,
        rows=summarise(asked, baseline),
        repeat=repeat,
        warmup_s=warmup_s,
        measured_s=(invocations.horizon_us - warmup_us) / 1e6,
        rules=rules,
    )


def tradeoff_figure(comparison: KeepAliveComparison) -> Figure:
    """The paper's trade-off plot: 3rd-quartile app cold-start % vs normalised wasted memory."""
    fig = new_figure()
    ax = fig.add_subplot()
    families: dict[str, list[KeepAliveRow]] = {}
    for row in comparison.rows:
        families.setdefault(row.policy.split(":")[0], []).append(row)
    markers = {"fixed": "o", "hybrid": "s", "never-unload": "^", "greedy-dual": "D"}
    for family, rows in families.items():
        xs = [r.cold_start_pct_p75_app for r in rows]
        ys = [r.wasted_memory_normalized or 0.0 for r in rows]
        ax.plot(xs, ys, marker=markers.get(family, "x"), linestyle="-" if len(rows) > 1 else "", label=family)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(
                r.policy.split(":", 1)[-1],
                (x, y),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=7,
            )
    ax.set_xlabel("cold-start % of the 3rd-quartile app")
    ax.set_ylabel("wasted memory time (fixed 10 min = 100)")
    ax.set_title(f"Keep-alive trade-off: {comparison.title}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def cold_start_cdf_figure(comparison: KeepAliveComparison) -> Figure:
    """Distribution over applications of their cold-start percentage, one line per policy."""
    fig = new_figure()
    ax = fig.add_subplot()
    for result in comparison.results:
        by_app = np.sort(result.cold_start_pct_by_app())
        if by_app.size:
            ax.step(by_app, np.arange(1, by_app.size + 1) / by_app.size, where="post", label=result.policy)
    ax.set_xlabel("application cold-start %")
    ax.set_ylabel("CDF of applications")
    ax.set_title("Cold starts per application")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig
