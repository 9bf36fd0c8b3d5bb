"""The Prometheus text exposition of the monitor's state, so an existing Prometheus/Grafana can scrape it.

Host metrics keep Ganglia's names under a ``ganglia_`` prefix, labelled with ``host``, ``cluster`` and
``groups`` (every group the host is in, comma-separated with leading and trailing commas so
``groups=~".*,web,.*"`` selects a group, the convention Prometheus' own service discovery uses for tags).
Groups also get their own series: member counts, a ``strato_group_member`` join table and every
aggregate as ``strato_group_metric{group, metric, stat}``. String metrics become info-style series
(value 1) with the text in a ``value`` label.

Ganglia names are free text and anyone who can send to gmond can add one, so several of them can clean to
the same series name (``load-one`` and ``load_one``; a string ``role`` and a number ``role_info``). Each
family is written once, with its samples together, as the format requires (two HELP or TYPE lines make
strict parsers reject the whole scrape), and a sample whose Ganglia name is not its cleaned name carries
that name in a ``ganglia_name`` label, so no two samples of a family share their labels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from strato.monitor.groups import STATISTICS, PollResult
from strato.monitor.model import Snapshot
from strato.monitor.service import PollStatus
from strato.monitor.views import groups_by_host

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")


def metric_name(name: str) -> str:
    cleaned = _INVALID.sub("_", name)
    return cleaned if cleaned[:1].isalpha() or cleaned[:1] in "_:" else "_" + cleaned


@dataclass
class _Family:
    """One series name: the Ganglia names written under it, whether any is a string, its samples."""

    names: set[str] = field(default_factory=set)
    text: bool = False
    samples: list[str] = field(default_factory=list)


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(
    snapshot: Snapshot | None,
    result: PollResult | None,
    status: PollStatus,
    *,
    stale_after_s: float | None = None,
) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")

    family("strato_monitor_polls_total", "counter", "Ganglia polls attempted.")
    lines.append(f"strato_monitor_polls_total {status.polls}")
    family("strato_monitor_poll_failures_total", "counter", "Ganglia polls that failed.")
    lines.append(f"strato_monitor_poll_failures_total {status.failures}")
    family("strato_monitor_poll_seconds", "gauge", "Duration of the last successful poll (read + groups).")
    lines.append(f"strato_monitor_poll_seconds {_number(status.last_poll_s)}")
    family(
        "strato_monitor_deadline_exceeded_total",
        "counter",
        "Polls whose deadline passed before every group's rule was evaluated.",
    )
    lines.append(f"strato_monitor_deadline_exceeded_total {status.deadline_exceeded}")
    if status.last_success_at is not None:
        family("strato_monitor_last_success_timestamp_seconds", "gauge", "When Ganglia was last read.")
        lines.append(f"strato_monitor_last_success_timestamp_seconds {_number(status.last_success_at)}")
    if snapshot is None or result is None:
        return "\n".join(lines) + "\n"

    groups_of = groups_by_host(result)

    family("strato_host_up", "gauge", "1 when the host reported within its stale limit.")
    for host in snapshot.hosts.values():
        lines.append(f'strato_host_up{{host="{_label(host.name)}"}} {int(host.alive(stale_after_s))}')

    families: dict[str, _Family] = {}
    for host in snapshot.hosts.values():
        groups = "," + ",".join(sorted(groups_of.get(host.name, []))) + ","
        labels = f'host="{_label(host.name)}",cluster="{_label(host.cluster)}",groups="{_label(groups)}"'
        for name, metric in host.metrics.items():
            cleaned = metric_name(name)
            extra = "" if cleaned == name else f',ganglia_name="{_label(name)}"'
            if isinstance(metric.value, str):
                series = f"ganglia_{cleaned}_info"
                sample = f'{{{labels}{extra},value="{_label(metric.value)}"}} 1'
            else:
                series = f"ganglia_{cleaned}"
                sample = f"{{{labels}{extra}}} {_number(metric.value)}"
            found = families.setdefault(series, _Family())
            found.names.add(name)
            found.text = found.text or isinstance(metric.value, str)
            found.samples.append(series + sample)
    for series, found in sorted(families.items()):
        shown = ", ".join(_help(name) for name in sorted(found.names))
        if found.text:
            family(series, "gauge", f"Ganglia string metric {shown} (the text is the value label).")
        else:
            family(series, "gauge", f"Ganglia metric {shown}.")
        lines.extend(found.samples)

    family("strato_group_members", "gauge", "Members of the group (listed hosts included).")
    for state in result.groups.values():
        lines.append(f'strato_group_members{{group="{_label(state.name)}"}} {len(state.members)}')
    family("strato_group_members_up", "gauge", "Members of the group that are up.")
    for state in result.groups.values():
        lines.append(f'strato_group_members_up{{group="{_label(state.name)}"}} {len(state.up)}')
    family(
        "strato_group_rule_error",
        "gauge",
        "1 when the group's rule could not be used in the last poll (the API says why).",
    )
    for state in result.groups.values():
        lines.append(
            f'strato_group_rule_error{{group="{_label(state.name)}"}} {int(state.error is not None)}'
        )
    family("strato_group_member", "gauge", "1 for every (group, host) membership; join on host.")
    for state in result.groups.values():
        for member in state.members:
            lines.append(f'strato_group_member{{group="{_label(state.name)}",host="{_label(member)}"}} 1')
    family(
        "strato_group_metric",
        "gauge",
        f"Group aggregates over members that are up ({', '.join(STATISTICS)}).",
    )
    for state in result.groups.values():
        for name, stats in state.aggregates.items():
            for stat, value in stats.items():
                lines.append(
                    f'strato_group_metric{{group="{_label(state.name)}",'
                    f'metric="{_label(name)}",stat="{stat}"}} '
                    f"{_number(value)}"
                )
    return "\n".join(lines) + "\n"
