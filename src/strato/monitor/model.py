"""What one poll of Ganglia says: hosts, their metrics, and how fresh they are.

Values keep Ganglia's own types: numeric types (``int8`` .. ``double``, ``timestamp``) become floats,
``string`` stays a string. Times are Ganglia's: ``tn`` is seconds since the value was last heard,
``tmax`` the longest expected gap, ``dmax`` how long before the collector forgets it (0 = never).
"""

from __future__ import annotations

from dataclasses import dataclass, field

NUMERIC_TYPES = frozenset(
    {"int8", "uint8", "int16", "uint16", "int32", "uint32", "float", "double", "timestamp"}
)
GANGLIA_TYPES = NUMERIC_TYPES | {"string"}


@dataclass(slots=True)
class Metric:
    name: str
    value: float | str
    type: str
    units: str = ""
    tn: int = 0
    tmax: int = 0
    dmax: int = 0
    slope: str = "both"
    group: str = ""
    """The metric's Ganglia group (its EXTRA_DATA GROUP element), e.g. ``cpu`` or ``load``."""

    @property
    def numeric(self) -> bool:
        return not isinstance(self.value, str)


@dataclass(slots=True)
class Host:
    name: str
    ip: str
    cluster: str = ""
    reported: int = 0
    """Unix time of the host's last heartbeat as the collector saw it."""
    tn: int = 0
    tmax: int = 20
    dmax: int = 0
    location: str = ""
    metrics: dict[str, Metric] = field(default_factory=dict)

    def alive(self, stale_after_s: float | None = None) -> bool:
        """Ganglia's convention: a host is down once it has been silent for four heartbeat periods."""
        limit = stale_after_s if stale_after_s is not None else 4 * max(self.tmax, 1)
        return self.tn <= limit

    def value(self, metric: str) -> float | str | None:
        found = self.metrics.get(metric)
        return None if found is None else found.value


@dataclass(slots=True)
class Snapshot:
    """One read of a gmond or gmetad: every host it knows, keyed by host name.

    A host name seen in two clusters (possible behind gmetad) keeps the most recently reported entry.
    """

    source: str
    taken_at: float
    hosts: dict[str, Host] = field(default_factory=dict)
    clusters: list[str] = field(default_factory=list)

    def metric_names(self) -> set[str]:
        names: set[str] = set()
        for host in self.hosts.values():
            names.update(host.metrics)
        return names
