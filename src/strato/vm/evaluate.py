"""Train/test experiments: pack nodes, build each policy's inputs, score risk and benefit per policy.

Training and evaluation use disjoint time ranges: windows starting before ``train_days`` train (their
futures are the oracle's labels), windows from ``train_days`` on are evaluated. Every decision sees only
the ``history_days`` before its window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np

from strato.core.stats import confidence_interval
from strato.errors import ConfigError
from strato.vm.env import EnvConfig, Nodes, Windows, history_series, outcome, pack, window_series, windows
from strato.vm.model import VmUsage
from strato.vm.policies import DecisionInputs, HindsightOracle, Policy


@dataclass(frozen=True)
class Experiment:
    usage: VmUsage
    config: EnvConfig
    train_days: int
    nodes: Nodes
    train: Windows
    test: Windows

    @classmethod
    def build(
        cls, usage: VmUsage, config: EnvConfig | None = None, *, train_days: int | None = None
    ) -> Experiment:
        config = config or EnvConfig()
        per_day = usage.slots_per_day
        days = usage.slots // per_day
        if days < 2:
            raise ConfigError(f"{usage.name}: {usage.days:.1f} days of data; an experiment needs at least 2")
        if train_days is None:
            # The last week is held out (3 weeks + 1 of the Azure sample); short data keeps a quarter.
            train_days = days - 7 if days >= 14 else max(2, days * 3 // 4)
        if not 1 <= train_days < days:
            raise ConfigError(
                f"--train-days {train_days} must leave days to evaluate ({days} whole days of data)"
            )
        nodes = pack(usage, config)
        return cls(
            usage=usage,
            config=config,
            train_days=train_days,
            nodes=nodes,
            train=windows(nodes, config, per_day, range(1, train_days)),
            test=windows(nodes, config, per_day, range(train_days, days)),
        )

    def inputs(self, spans: Windows, *, future: bool = False) -> DecisionInputs:
        usage, nodes, config = self.usage, self.nodes, self.config
        history_slots = config.history_days * usage.slots_per_day
        weights = usage.vcpus.astype(float)
        start = spans.window * spans.slots_per_window

        @cache
        def per_window(p: float) -> dict[int, np.ndarray]:
            # Each VM's p-th percentile over the history before each distinct window start.
            table: dict[int, np.ndarray] = {}
            for begin in np.unique(start).tolist():
                past = usage.max_pct[max(0, begin - history_slots) : begin]
                table[begin] = np.percentile(past, p, axis=0) if len(past) else np.full(usage.vms, np.nan)
            return table

        def vm_peak(p: float) -> np.ndarray:
            table = per_window(float(p))
            return np.array(
                [
                    table[begin][nodes.members[node]]
                    @ weights[nodes.members[node]]
                    / (100 * nodes.allocated[node])
                    for node, begin in zip(spans.node.tolist(), start.tolist(), strict=True)
                ]
            )

        return DecisionInputs(
            history_max=history_series(nodes.util_max, spans, history_slots),
            history_avg=history_series(nodes.util_avg, spans, history_slots),
            vm_peak=vm_peak,
            classes=[nodes.vm_class[node] for node in spans.node.tolist()],
            ratios=config.ratios,
            slots_per_day=usage.slots_per_day,
            future_max=window_series(nodes.util_max, spans) if future else None,
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Score:
    policy: str
    risk: float
    """Fraction of evaluated node-slots whose demand exceeded the physical cores."""
    risk_ci: tuple[float, float]
    severity: float
    """Excess demand, core-minutes per node-day."""
    benefit: float
    """vCPUs sold beyond physical cores per node (stranded cores avoided)."""
    benefit_ci: tuple[float, float]
    benefit_pct: float
    """Benefit as a percentage of the node's cores."""
    mean_ratio: float
    node_windows: int
    overloaded_windows: float
    """Fraction of node-windows with at least one overloaded slot."""

    def to_row(self) -> dict[str, str | int | float]:
        """Flat values by column key (confidence intervals as ``*_low``/``*_high``), for tables."""
        return {
            "policy": self.policy,
            "risk": self.risk,
            "risk_low": self.risk_ci[0],
            "risk_high": self.risk_ci[1],
            "severity_core_min_per_node_day": self.severity,
            "benefit_vcpus_per_node": self.benefit,
            "benefit_low": self.benefit_ci[0],
            "benefit_high": self.benefit_ci[1],
            "benefit_pct_of_cores": self.benefit_pct,
            "mean_ratio": self.mean_ratio,
            "overloaded_windows": self.overloaded_windows,
            "node_windows": self.node_windows,
        }

    def to_json(self) -> dict[str, str | int | float | None]:
        """:meth:`to_row` with non-finite numbers (no evaluated windows) as null."""
        return {
            key: _finite(value) if isinstance(value, float) else value for key, value in self.to_row().items()
        }


def _ci(per_node: np.ndarray) -> tuple[float, float]:
    if per_node.size < 2 or np.all(per_node == per_node[0]):
        value = float(per_node.mean()) if per_node.size else math.nan
        return value, value
    interval = confidence_interval(per_node)
    return max(interval.low, 0.0), interval.high


def score(experiment: Experiment, policy: Policy, ratios: np.ndarray) -> Score:
    spans = experiment.test
    future = window_series(experiment.nodes.util_max, spans)
    result = outcome(ratios, future, experiment.config.cores, experiment.usage.slot_s)
    nodes = experiment.nodes.count
    counts = np.bincount(spans.node, minlength=nodes).astype(float)
    per_node_risk = np.bincount(spans.node, result.overloaded_slots, minlength=nodes) / (
        counts * spans.slots_per_window
    )
    per_node_benefit = np.bincount(spans.node, result.benefit_vcpus, minlength=nodes) / counts
    days = spans.slots_per_window * experiment.usage.slot_s / 86400
    return Score(
        policy=policy.name,
        risk=float(result.overloaded_slots.sum() / (spans.count * spans.slots_per_window)),
        risk_ci=_ci(per_node_risk),
        severity=float(result.excess_core_minutes.sum() / (spans.count * days)),
        benefit=float(result.benefit_vcpus.mean()),
        benefit_ci=_ci(per_node_benefit),
        benefit_pct=float(result.benefit_vcpus.mean() / experiment.config.cores * 100),
        mean_ratio=float(ratios.mean()),
        node_windows=spans.count,
        overloaded_windows=float((result.overloaded_slots > 0).mean()),
    )


def run_policy(experiment: Experiment, policy: Policy) -> Score:
    """Fit a learned policy on the training windows if it needs it, then score it on the test windows."""
    from strato.vm.protohail import ProtoHAIL

    if isinstance(policy, ProtoHAIL) and not policy.fitted:
        policy.fit_experiment(experiment)
    inputs = experiment.inputs(experiment.test, future=isinstance(policy, HindsightOracle))
    return score(experiment, policy, policy.decide(inputs))


def evaluate(experiment: Experiment, policies: list[Policy]) -> list[Score]:
    return [run_policy(experiment, policy) for policy in policies]


def frontier(experiment: Experiment, policy: Policy) -> list[Score]:
    """The policy's (risk, benefit) points along its knob (one point for a policy without one)."""
    from strato.vm.protohail import ProtoHAIL

    if isinstance(policy, ProtoHAIL) and not policy.fitted:
        policy.fit_experiment(experiment)  # once: its variants share the prototypes
    return [run_policy(experiment, variant) for variant in policy.sweep()]


def static_frontier(points: list[Score]) -> tuple[np.ndarray, np.ndarray]:
    """The upper envelope (risk ascending, benefit non-decreasing) of static heuristics' points."""
    ordered = sorted(points, key=lambda s: (s.risk, -s.benefit))
    risks, benefits = [0.0], [0.0]  # fixed:1 is always available
    for point in ordered:
        if point.benefit > benefits[-1]:
            risks.append(point.risk)
            benefits.append(point.benefit)
    return np.array(risks), np.array(benefits)


def benefit_at_risk(frontier_points: tuple[np.ndarray, np.ndarray], risk: float) -> float:
    """The static frontier's benefit at ``risk``, interpolated linearly between its points."""
    risks, benefits = frontier_points
    return float(np.interp(risk, risks, benefits))


@dataclass(frozen=True)
class Comparison:
    """ProtoHAIL against the best static heuristic, point by point along both frontiers."""

    policy: str
    risk: float
    benefit: float
    static_benefit_at_equal_risk: float
    benefit_gain: float
    """ProtoHAIL's benefit over the static frontier's at the same risk."""
    static_risk_at_equal_benefit: float
    risk_reduction: float
    """The static frontier's risk for the same benefit over ProtoHAIL's risk."""

    def to_row(self) -> dict[str, str | float]:
        return asdict(self)

    def to_json(self) -> dict[str, str | float | None]:
        """Infinite ratios (the static frontier never reaches the benefit, or zero risk) become null."""
        return {
            key: _finite(value) if isinstance(value, float) else value for key, value in asdict(self).items()
        }


def compare(learned: list[Score], static: list[Score]) -> list[Comparison]:
    envelope = static_frontier(static)
    risks, benefits = envelope
    rows = []
    for point in learned:
        equal_risk = benefit_at_risk(envelope, point.risk)
        # The least risk at which the static frontier reaches this benefit (inf if it never does).
        reach = np.flatnonzero(benefits >= point.benefit - 1e-12)
        if len(reach):
            i = int(reach[0])
            if i == 0:
                static_risk = 0.0
            else:
                span = benefits[i] - benefits[i - 1]
                fraction = (point.benefit - benefits[i - 1]) / span if span > 0 else 1.0
                static_risk = float(risks[i - 1] + fraction * (risks[i] - risks[i - 1]))
        else:
            static_risk = math.inf
        rows.append(
            Comparison(
                policy=point.policy,
                risk=point.risk,
                benefit=point.benefit,
                static_benefit_at_equal_risk=equal_risk,
                benefit_gain=point.benefit / equal_risk if equal_risk > 0 else math.inf,
                static_risk_at_equal_benefit=static_risk,
                risk_reduction=static_risk / point.risk if point.risk > 0 else math.inf,
            )
        )
    return rows
