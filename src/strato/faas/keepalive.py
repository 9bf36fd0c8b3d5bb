"""The keep-alive experiment: run a set of policies on one workload and compare them as the paper does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from strato.core.report import new_figure
from strato.errors import ConfigError
from strato.faas.policies import PAPER_POLICY_SET, KeepAlivePolicy, parse_policy
from strato.faas.results import BASELINE_POLICY, PolicyResult, summarise
from strato.faas.simulator import simulate
from strato.traces.model import DurationMode, Workload


@dataclass(frozen=True)
class KeepAliveComparison:
    workload: str
    results: list[PolicyResult]
    rows: list[dict[str, Any]]
    """One summary per policy, in the order asked, wasted memory normalised to fixed 10 min = 100."""

    def row(self, policy: str) -> dict[str, Any]:
        for row in self.rows:
            if row["policy"] == policy:
                return row
        raise KeyError(policy)


def compare_policies(
    workload: Workload,
    specs: Sequence[str] = PAPER_POLICY_SET,
    *,
    seed: int = 0,
    durations: DurationMode = "sampled",
    capacity_mb: float | None = None,
    cold_start_s: float = 1.0,
    show_progress: bool | None = None,
) -> KeepAliveComparison:
    """Simulate every policy in ``specs`` on ``workload`` (plus fixed 10 min for the normalisation)."""
    if not specs:
        raise ConfigError("no policy to simulate")
    policies: list[KeepAlivePolicy] = [parse_policy(spec) for spec in specs]
    names = [policy.name for policy in policies]
    if len(set(names)) != len(names):
        raise ConfigError(f"the same policy is listed twice: {', '.join(names)}")
    if BASELINE_POLICY not in names:
        policies.append(parse_policy(BASELINE_POLICY))
    invocations = workload.expand(seed=seed, durations=durations)
    results = simulate(
        invocations,
        workload.app_memory_mb,
        policies,
        capacity_mb=capacity_mb,
        cold_start_s=cold_start_s,
        show_progress=show_progress,
    )
    baseline = next(r for r in results if r.policy == BASELINE_POLICY)
    asked = results[: len(names)]
    return KeepAliveComparison(workload=workload.name, results=asked, rows=summarise(asked, baseline))


def tradeoff_figure(comparison: KeepAliveComparison) -> Figure:
    """The paper's trade-off plot: 3rd-quartile app cold-start % vs normalised wasted memory."""
    fig = new_figure()
    ax = fig.add_subplot()
    families: dict[str, list[dict[str, Any]]] = {}
    for row in comparison.rows:
        families.setdefault(str(row["policy"]).split(":")[0], []).append(row)
    markers = {"fixed": "o", "hybrid": "s", "never-unload": "^", "greedy-dual": "D"}
    for family, rows in families.items():
        xs = [r["cold_start_pct_p75_app"] for r in rows]
        ys = [r["wasted_memory_normalized"] or 0.0 for r in rows]
        ax.plot(xs, ys, marker=markers.get(family, "x"), linestyle="-" if len(rows) > 1 else "", label=family)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(
                str(r["policy"]).split(":", 1)[-1].replace("range=", ""),
                (x, y),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=7,
            )
    ax.set_xlabel("cold-start % of the 3rd-quartile app")
    ax.set_ylabel("wasted memory time (fixed 10 min = 100)")
    ax.set_title(f"Keep-alive trade-off: {comparison.workload}")
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
