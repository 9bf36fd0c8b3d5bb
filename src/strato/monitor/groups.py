"""Group membership, aggregates and history, recomputed from each Ganglia snapshot.

One poll builds a hosts x metrics matrix of the numeric values once (NaN where a host lacks a metric),
then every group is a set of row indices: its aggregates are column reductions over those rows, so a poll
costs one pass over the XML plus a few numpy calls per group, whatever the number of metrics.

Membership: a host is in a group when it is listed explicitly, or when it is alive (see
:meth:`Host.alive`) and the group's rule matches it. Listed hosts that are down or absent stay members
and are reported as such; aggregates use only the members that are up. Changes against the previous poll
(who entered, who left) are part of every result, so a caller can act on them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from strato.errors import ConfigError
from strato.monitor.model import Snapshot
from strato.monitor.rules import Rule, parse_rule
from strato.monitor.store import GroupDef

STATISTICS = ("count", "sum", "mean", "min", "max", "p50", "p90", "p99")


@dataclass
class GroupState:
    name: str
    rule: str | None
    members: list[str]
    """Every member, sorted: rule matches that are up plus every listed host."""
    up: list[str]
    down: list[str]
    """Listed members that are silent (past the stale limit) or absent from Ganglia."""
    entered: list[str]
    left: list[str]
    aggregates: dict[str, dict[str, float]]
    """metric -> statistic (count, sum, mean, min, max, p50, p90, p99) over the members that are up."""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    """Why the rule could not be used (then only listed hosts are members)."""


@dataclass
class PollResult:
    taken_at: float
    hosts: int
    hosts_up: int
    groups: dict[str, GroupState]
    duration_s: float


class GroupEngine:
    """Keeps the previous membership (for entered/left) and a short history of every group's aggregates."""

    def __init__(self, *, history: int = 240, stale_after_s: float | None = None) -> None:
        self.history_length = history
        self.stale_after_s = stale_after_s
        self._rules: dict[str, tuple[str, Rule | None, str | None]] = {}
        self._previous: dict[str, set[str]] = {}
        self.history: dict[str, deque[tuple[float, int, dict[str, tuple[float, float, float]]]]] = {}
        """group -> (time, member count, metric -> (mean, min, max)) per poll, oldest first."""

    def _rule(self, group: GroupDef) -> tuple[Rule | None, str | None]:
        cached = self._rules.get(group.name)
        if cached is not None and cached[0] == (group.rule or ""):
            return cached[1], cached[2]
        rule: Rule | None = None
        error: str | None = None
        if group.rule:
            try:
                rule = parse_rule(group.rule)
            except ConfigError as problem:  # stored before a grammar change, or edited by hand
                error = str(problem)
        self._rules[group.name] = (group.rule or "", rule, error)
        return rule, error

    def update(self, snapshot: Snapshot, groups: Sequence[GroupDef]) -> PollResult:
        started = time.perf_counter()
        hosts = list(snapshot.hosts.values())
        index = {host.name: row for row, host in enumerate(hosts)}
        alive = [host.alive(self.stale_after_s) for host in hosts]
        columns: dict[str, int] = {}
        for host in hosts:
            for name, metric in host.metrics.items():
                if metric.numeric and name not in columns:
                    columns[name] = len(columns)
        matrix = np.full((len(hosts), len(columns)), np.nan)
        for row, host in enumerate(hosts):
            values = matrix[row]
            for name, metric in host.metrics.items():
                if metric.numeric:
                    values[columns[name]] = metric.value
        known = snapshot.metric_names()
        metric_names = list(columns)

        states: dict[str, GroupState] = {}
        for group in groups:
            rule, error = self._rule(group)
            warnings: list[str] = []
            chosen: set[str] = set(group.members)
            if rule is not None:
                chosen.update(
                    host.name for host, up in zip(hosts, alive, strict=True) if up and rule.matches(host)
                )
                missing = sorted(rule.metrics - known)
                if missing and hosts:
                    warnings.append(f"no host reports {', '.join(missing)}; the rule cannot match on it")
            up = sorted(name for name in chosen if name in index and alive[index[name]])
            down = sorted(chosen.difference(up))
            previous = self._previous.get(group.name, set())
            states[group.name] = GroupState(
                name=group.name,
                rule=group.rule,
                members=sorted(chosen),
                up=up,
                down=down,
                entered=sorted(chosen - previous),
                left=sorted(previous - chosen),
                aggregates=_aggregate(matrix[[index[name] for name in up]], metric_names),
                warnings=warnings,
                error=error,
            )
            self._previous[group.name] = chosen
            self._remember(group.name, snapshot.taken_at, states[group.name])
        for gone in set(self._previous) - {group.name for group in groups}:
            del self._previous[gone]
            self.history.pop(gone, None)
            self._rules.pop(gone, None)
        return PollResult(
            taken_at=snapshot.taken_at,
            hosts=len(hosts),
            hosts_up=sum(alive),
            groups=states,
            duration_s=time.perf_counter() - started,
        )

    def _remember(self, group: str, taken_at: float, state: GroupState) -> None:
        series = self.history.setdefault(group, deque(maxlen=self.history_length))
        series.append(
            (
                taken_at,
                len(state.up),
                {
                    name: (stats["mean"], stats["min"], stats["max"])
                    for name, stats in state.aggregates.items()
                },
            )
        )


def _aggregate(rows: np.ndarray, names: list[str]) -> dict[str, dict[str, float]]:
    if rows.shape[0] == 0 or not names:
        return {}
    counts = np.sum(~np.isnan(rows), axis=0)
    present = counts > 0
    if not present.any():
        return {}
    data = rows[:, present]
    with np.errstate(invalid="ignore"):
        sums = np.nansum(data, axis=0)
        stats = {
            "count": counts[present].astype(float),
            "sum": sums,
            "mean": sums / counts[present],
            "min": np.nanmin(data, axis=0),
            "max": np.nanmax(data, axis=0),
        }
        p50, p90, p99 = np.nanpercentile(data, [50, 90, 99], axis=0)
    stats.update(p50=p50, p90=p90, p99=p99)
    kept = [name for name, keep in zip(names, present, strict=True) if keep]
    return {
        name: {statistic: float(stats[statistic][column]) for statistic in STATISTICS}
        for column, name in enumerate(kept)
    }
