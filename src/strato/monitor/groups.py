"""Group membership, aggregates and history, recomputed from each Ganglia snapshot.

One poll builds a hosts x metrics matrix of the numeric values once (NaN where a host lacks a metric),
then every group is a set of row indices: its aggregates are column reductions over those rows, so a poll
costs one pass over the XML plus a few numpy calls per group, whatever the number of metrics.

Membership: a host is in a group when it is listed explicitly, or when it is alive (see
:meth:`Host.alive`) and the group's rule matches it. Listed hosts that are down or absent stay members
and are reported as such; aggregates use only the members that are up. Changes against the previous poll
(who entered, who left) are part of every result, so a caller can act on them.

Deadline: a poll evaluates rules until ``deadline_s`` after it started (the Ganglia read included). Rule
groups go cheapest first, by their cost in the previous poll, so one costly rule cannot starve the
others twice; the group being evaluated when the deadline passes, and those after it, get an ``error``
and only their listed hosts as members for that poll. Evaluation checks the clock between small batches
of hosts: regular expressions run on RE2 (:mod:`strato.monitor.patterns`), so one host costs at most
a few microseconds per rule term, and a batch cannot overrun the deadline by much.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from strato.errors import ConfigError
from strato.monitor.model import Host, Snapshot
from strato.monitor.rules import Rule, parse_rule
from strato.monitor.store import GroupDef

STATISTICS = ("count", "sum", "mean", "min", "max", "p50", "p90", "p99")
DEFAULT_DEADLINE_S = 10.0
# Hosts evaluated between two looks at the clock: a few hundred microseconds of work at most.
_BATCH = 32


@dataclass(frozen=True)
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
    """Why the rule could not be used: it does not compile, or the poll's deadline passed before it was
    evaluated on every host. Only listed hosts are members then."""


@dataclass(frozen=True)
class PollResult:
    taken_at: float
    hosts: int
    hosts_up: int
    groups: dict[str, GroupState]
    duration_s: float
    deadline_exceeded: bool = False
    """Some rule was not evaluated on every host before the poll's deadline."""

    @property
    def errors(self) -> list[str]:
        """The groups whose rule could not be used in this poll."""
        return [name for name, state in self.groups.items() if state.error is not None]


class GroupEngine:
    """Keeps the previous membership (for entered/left) and a short history of every group's aggregates."""

    def __init__(
        self,
        *,
        history: int = 240,
        stale_after_s: float | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.history_length = history
        self.stale_after_s = stale_after_s
        self.deadline_s = deadline_s
        self.clock = clock
        """The clock the deadline is measured on; a poll's ``started`` must come from it too."""
        self._rules: dict[str, tuple[str, Rule | None, str | None]] = {}
        self._cost: dict[str, float] = {}
        """group -> seconds its rule took in the previous poll (infinite when it hit the deadline)."""
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
            except Exception as problem:  # a stored rule must never stop the poller
                error = f"the rule could not be compiled: {problem!r}"
        self._rules[group.name] = (group.rule or "", rule, error)
        return rule, error

    def update(
        self, snapshot: Snapshot, groups: Sequence[GroupDef], *, started: float | None = None
    ) -> PollResult:
        """Recompute every group from ``snapshot``; ``started`` (on :attr:`clock`) is when the poll
        began, so its deadline counts the Ganglia read too (default: now)."""
        began = time.perf_counter()
        deadline = (self.clock() if started is None else started) + self.deadline_s
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
        live = [host for host, up in zip(hosts, alive, strict=True) if up]
        matched, late = self._evaluate(groups, live, deadline)

        states: dict[str, GroupState] = {}
        for group in groups:
            rule, error = self._rule(group)
            warnings: list[str] = []
            chosen: set[str] = set(group.members)
            if group.name in late:
                error = late[group.name]
            elif rule is not None:
                chosen.update(matched[group.name])
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
            self._cost.pop(gone, None)
        return PollResult(
            taken_at=snapshot.taken_at,
            hosts=len(hosts),
            hosts_up=sum(alive),
            groups=states,
            duration_s=time.perf_counter() - began,
            deadline_exceeded=bool(late),
        )

    def _evaluate(
        self, groups: Sequence[GroupDef], live: list[Host], deadline: float
    ) -> tuple[dict[str, set[str]], dict[str, str]]:
        """Rule members of every group with a usable rule, cheapest rule first, until ``deadline``.

        Returns the members found per group, and the groups left unfinished with the reason."""
        rules = [(group.name, rule) for group in groups if (rule := self._rule(group)[0]) is not None]
        rules.sort(key=lambda item: self._cost.get(item[0], 0.0))
        matched: dict[str, set[str]] = {}
        late: dict[str, str] = {}
        clock = self.clock
        limit = f"the poll's deadline ({self.deadline_s:g} s)"
        for name, rule in rules:
            began = clock()
            if began > deadline:
                # Its cost stays as it was: the groups before it overran, not this one.
                late[name] = (
                    f"not evaluated: {limit} passed before this group's turn; only listed hosts count"
                )
                continue
            test = rule.matches
            chosen: set[str] = set()
            for start in range(0, len(live), _BATCH):
                if start and clock() > deadline:
                    late[name] = (
                        f"rule evaluation stopped at {limit} after {start} of {len(live)} hosts; "
                        "only listed hosts count"
                    )
                    break
                chosen.update(host.name for host in live[start : start + _BATCH] if test(host))
            matched[name] = chosen
            self._cost[name] = math.inf if name in late else clock() - began
        return matched, late

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
