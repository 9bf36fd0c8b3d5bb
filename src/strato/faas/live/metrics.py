"""Prometheus text exposition for the gateway: counters, gauges and histograms with labels."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

Labels = tuple[tuple[str, str], ...]


def labels(**pairs: str) -> Labels:
    """Labels in the canonical (sorted) form the metrics key their series by."""
    return tuple(sorted(pairs.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: Labels, extra: str = "") -> str:
    parts = [f'{key}="{_escape(value)}"' for key, value in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Counter:
    def __init__(self, name: str, help_text: str, kind: str = "counter") -> None:
        self.name, self.help, self.kind = name, help_text, kind
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.inc_key(tuple(sorted(labels.items())), amount)

    def inc_key(self, key: Labels, amount: float = 1.0) -> None:
        """``inc`` with the labels already in canonical form (see :func:`labels`): the hot path."""
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_label_text(labels)} {value:g}"


class Gauge:
    """A gauge computed when scraped, so it can never drift from the state it reports (``kind="counter"``:
    a running total kept elsewhere, read the same way)."""

    def __init__(
        self,
        name: str,
        help_text: str,
        read: Callable[[], Iterable[tuple[Labels, float]]],
        kind: str = "gauge",
    ) -> None:
        self.name, self.help, self.read, self.kind = name, help_text, read, kind

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in self.read():
            yield f"{self.name}{_label_text(labels)} {value:g}"


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        self.observe_key(tuple(sorted(labels.items())), value)

    def observe_key(self, key: Labels, value: float) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = ([0] * (len(self.buckets) + 1), [0.0])
        series[0][bisect.bisect_left(self.buckets, value)] += 1
        series[1][0] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, count in zip(self.buckets, counts, strict=False):
                running += count
                bucket_labels = _label_text(labels, f'le="{bound:g}"')
                yield f"{self.name}_bucket{bucket_labels} {running}"
            running += counts[-1]
            infinity_labels = _label_text(labels, 'le="+Inf"')
            yield f"{self.name}_bucket{infinity_labels} {running}"
            yield f"{self.name}_sum{_label_text(labels)} {total[0]:g}"
            yield f"{self.name}_count{_label_text(labels)} {running}"


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Counter | Gauge | Histogram] = []

    def counter(self, name: str, help_text: str) -> Counter:
        metric = Counter(name, help_text)
        self.metrics.append(metric)
        return metric

    def gauge(
        self,
        name: str,
        help_text: str,
        read: Callable[[], Iterable[tuple[Labels, float]]],
        kind: str = "gauge",
    ) -> Gauge:
        metric = Gauge(name, help_text, read, kind)
        self.metrics.append(metric)
        return metric

    def histogram(
        self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    ) -> Histogram:
        metric = Histogram(name, help_text, buckets)
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for metric in self.metrics for line in metric.render()) + "\n"
