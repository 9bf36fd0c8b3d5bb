"""Typed views of the monitor's state: what the JSON API answers and what ``strato monitor ... --json``
prints, built once here for both.

Views are frozen dataclasses built from the library's own objects (:class:`~strato.monitor.model.Host`,
:class:`~strato.monitor.store.GroupDef` with its :class:`~strato.monitor.groups.GroupState`, the poller's
status); action records and templates need no view, :class:`~strato.monitor.audit.ActionRecord` and
:class:`~strato.monitor.actions.Template` are frozen dataclasses already. They stay plain dataclasses, not
Pydantic models, because the CLI uses them without any web framework: the server names them as FastAPI
response models, so Pydantic validates and serialises them only at the HTTP edge and derives the OpenAPI
schema from them, attribute docstrings included, and no schema is written twice. The builders turn
non-finite numbers (a NaN or an infinity from Ganglia) into ``None``, so a view is JSON as it stands and
its schema says ``null`` where one can appear.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from strato.monitor.groups import GroupState, PollResult
from strato.monitor.model import Host
from strato.monitor.store import GroupDef

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from strato.monitor.config import MonitorConfig
    from strato.monitor.service import PollStatus


class _Documented:
    # Read by Pydantic when the server documents a view: attribute docstrings become field descriptions.
    __pydantic_config__: ClassVar[dict[str, bool]] = {"use_attribute_docstrings": True}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class MetricView(_Documented):
    value: float | str | None
    """Ganglia's value: a number for numeric types, else a string; null when not finite."""
    type: str
    """Ganglia's type: int8 .. uint32, float, double, timestamp or string."""
    units: str
    tn: int
    """Seconds since the value was last heard."""


@dataclass(frozen=True)
class HostView(_Documented):
    name: str
    ip: str
    cluster: str
    up: bool
    """Heard from within the stale limit (Ganglia's 4 x TMAX unless configured)."""
    tn: int
    """Seconds since the host's last heartbeat."""
    reported: int
    """Unix time of the last heartbeat as the collector saw it."""
    groups: tuple[str, ...]
    """The groups the host is a member of in the last poll."""
    metrics: dict[str, MetricView]


@dataclass(frozen=True)
class GroupView(_Documented):
    """A group's definition and, once a poll has computed it, its membership; the membership fields are
    null until then."""

    name: str
    rule: str | None
    listed: tuple[str, ...]
    """Hosts listed explicitly: members whatever the rule says."""
    description: str
    members: tuple[str, ...] | None = None
    """Rule matches that are up plus every listed host, sorted."""
    up: tuple[str, ...] | None = None
    down: tuple[str, ...] | None = None
    """Listed members that are silent or absent from Ganglia."""
    entered: tuple[str, ...] | None = None
    """Members that were not members in the poll before."""
    left: tuple[str, ...] | None = None
    aggregates: dict[str, dict[str, float | None]] | None = None
    """metric -> statistic (count, sum, mean, min, max, p50, p90, p99) over the members that are up."""
    warnings: tuple[str, ...] | None = None
    error: str | None = None
    """Why the rule could not be used in the last poll (only listed hosts are members then)."""


@dataclass(frozen=True)
class StatusView(_Documented):
    source: str
    """The gmond or gmetad read."""
    interval_s: float
    polls: int
    failures: int
    last_error: str | None
    last_error_at: float | None
    last_success_at: float | None
    last_read_s: float
    last_poll_s: float
    group_errors: tuple[str, ...]
    """Groups whose rule could not be used in the last poll."""
    deadline_exceeded: int
    """Polls that reached their deadline before every rule was evaluated."""
    hosts: int
    hosts_up: int
    groups: int


@dataclass(frozen=True)
class HistoryPoint(_Documented):
    t: float
    """Unix time of the poll."""
    members_up: int
    mean: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True)
class HistoryView(_Documented):
    group: str
    metric: str
    points: tuple[HistoryPoint, ...]
    """Oldest first; polls in which no member that was up reported the metric are left out."""


@dataclass(frozen=True)
class ActionStarted(_Documented):
    id: int
    """The audit id: the action row is committed before any host runs."""
    url: str
    """Where the record (and every host's result as it arrives) can be read."""


def to_json(view: DataclassInstance) -> dict[str, Any]:
    """A view (or an ActionRecord, a Template) as JSON-ready data, for the CLI's ``--json``."""
    return asdict(view)


def host_view(host: Host, groups: Iterable[str], stale_after_s: float | None) -> HostView:
    return HostView(
        name=host.name,
        ip=host.ip,
        cluster=host.cluster,
        up=host.alive(stale_after_s),
        tn=host.tn,
        reported=host.reported,
        groups=tuple(groups),
        metrics={
            name: MetricView(
                value=metric.value if isinstance(metric.value, str) else _finite(metric.value),
                type=metric.type,
                units=metric.units,
                tn=metric.tn,
            )
            for name, metric in sorted(host.metrics.items())
        },
    )


def group_view(definition: GroupDef, state: GroupState | None) -> GroupView:
    listed = GroupView(definition.name, definition.rule, definition.members, definition.description)
    if state is None:
        return listed
    return GroupView(
        name=listed.name,
        rule=listed.rule,
        listed=listed.listed,
        description=listed.description,
        members=tuple(state.members),
        up=tuple(state.up),
        down=tuple(state.down),
        entered=tuple(state.entered),
        left=tuple(state.left),
        aggregates={
            metric: {statistic: _finite(value) for statistic, value in stats.items()}
            for metric, stats in state.aggregates.items()
        },
        warnings=tuple(state.warnings),
        error=state.error,
    )


def groups_by_host(result: PollResult | None) -> dict[str, list[str]]:
    """host -> the sorted names of the groups it is a member of in ``result``."""
    found: dict[str, list[str]] = {}
    if result is not None:
        for name in sorted(result.groups):
            for host in result.groups[name].members:
                found.setdefault(host, []).append(name)
    return found


def status_view(config: MonitorConfig, status: PollStatus, result: PollResult | None) -> StatusView:
    return StatusView(
        source=config.source,
        interval_s=config.interval_s,
        polls=status.polls,
        failures=status.failures,
        last_error=status.last_error,
        last_error_at=status.last_error_at,
        last_success_at=status.last_success_at,
        last_read_s=status.last_read_s,
        last_poll_s=status.last_poll_s,
        group_errors=tuple(status.group_errors),
        deadline_exceeded=status.deadline_exceeded,
        hosts=result.hosts if result else 0,
        hosts_up=result.hosts_up if result else 0,
        groups=len(result.groups) if result else 0,
    )


def history_view(
    group: str, metric: str, series: Iterable[tuple[float, int, Mapping[str, tuple[float, float, float]]]]
) -> HistoryView:
    points = []
    for t, up, stats in series:
        if metric in stats:
            mean, low, high = stats[metric]
            points.append(HistoryPoint(t, up, _finite(mean), _finite(low), _finite(high)))
    return HistoryView(group, metric, tuple(points))
