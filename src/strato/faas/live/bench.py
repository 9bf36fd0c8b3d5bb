"""The live platform's backends side by side: throughput, latency at equal load, a low-load floor, cold
starts.

Junctiond (faasd on a kernel-bypass library OS) claims, against faasd, a median latency 37 % lower, a P99
63 % lower and 5x the throughput. Our analogue is the ``lean`` backend (gateway -> instance over a unix
socket) against the ``faasd`` backend (gateway -> provider -> watchdog -> function, each a real HTTP hop),
measured with the same load from a separate load-generator process: the Python generator
(:func:`~strato.faas.live.loadgen.run_in_subprocess`) and, when it is installed, ``wrk`` (a C generator,
:func:`~strato.faas.live.loadgen.run_wrk`), which checks that the Python one was not the bottleneck.

The bench makes ``repeat`` complete runs, interleaved: odd runs load lean first, even runs faasd first, so
that neither backend always meets a cooler or warmer machine. One run, in order:

1. For each backend: a server in its own temporary state directory (policy ``never-unload``, sandbox on),
   an echo function, a warm-up until the instance count stops changing, then the maximum throughput
   (closed loop, ``connections`` connections, ``duration_s``) with the Python generator and then with
   ``wrk -t1 -c<connections>`` (same URL, method and body, through a Lua script).
2. Optionally, per backend, a rate search: the highest open-loop rate whose achieved rate is >= 95 % of
   the offered one with a P99 under 100 ms (short probes, bisection).
3. For each backend: latency at the same offered rate ``R`` (open loop, Poisson arrivals, the same seed
   so both get the very same schedule). ``R`` defaults to half the lower of the two maximum throughputs
   (wrk's when it ran), which is why every throughput is measured before any latency.
4. The low-load floor: the lean backend's warm p50 with one connection, closed loop, next to a plain
   Python echo server's (:mod:`~strato.faas.live.plain_echo`, TCP on 127.0.0.1 like the gateway),
   with the same generator (wrk when it ran).

After the runs, once: cold starts of the lean backend with ``fixed:1ms`` keep-alive, so that every
invocation after a short pause finds no instance: ``fresh`` spawn, ``fork`` spawn, and ``fork`` without
the sandbox to show what isolation costs.

The throughput ratio is judged on wrk's numbers when wrk ran, on the Python generator's otherwise. Over
the runs, each ratio's min / median / max is reported (:class:`RepeatSummary`); the throughput must reach
5x in the median and 4x in every run, the latency ratios their targets in every run.

Every load phase also says where the machine's CPU went (:class:`PhaseCpu`): the measured server's
process tree, the load generator (per request and as a share of one core), the rest of this bench, and
everything else on the machine (from ``/proc/stat``). The report warns when other work took a noticeable
share, and when a generator used more than 80 % of a core (it may then have been the bottleneck).

Only one server is ever under load: the other one idles (its instances block in a read) until its turn.
Open-loop runs use the same connection cap as the closed loop, so a burst queues in the client (and that
wait counts in the latency, measured from each request's intended send time) instead of making the
autoscaler start instances in the middle of a measurement; the instances each phase started anyway are
reported next to its numbers.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from strato.errors import ConfigError, StratoError
from strato.faas.live.client import FaasClient
from strato.faas.live.loadgen import (
    WRK_INSTALL_HINT,
    LoadResult,
    Target,
    WrkResult,
    find_wrk,
    run_in_subprocess,
    run_wrk,
)
from strato.faas.live.plain_echo import plain_echo_server
from strato.faas.live.serverproc import ServerProcess, running_server

BACKENDS: Final = ("lean", "faasd")
LOAD_GENERATORS: Final = ("auto", "wrk", "python")
MAX_REPEAT: Final = 100
FUNCTION: Final = "echo"
ECHO_HANDLER: Final = "def handle(event):\n    return event.body\n"

MEDIAN_TARGET: Final = 0.63
"""Junctiond: median latency -37.33 % against faasd, so lean/faasd <= 0.63."""
P99_TARGET: Final = 0.37
"""Junctiond: P99 latency -63.42 % against faasd, so lean/faasd <= 0.37."""
THROUGHPUT_TARGET: Final = 5.0
"""Junctiond v1: 5x faasd's throughput (over repeated runs: the median)."""
THROUGHPUT_FLOOR: Final = 4.0
"""Over repeated runs, no run's throughput ratio may fall below this."""
PLAIN_ECHO_TARGET: Final = 3.0
"""Lean warm p50 at one connection within 3x of a plain Python echo server's over the same kind of socket."""
FORK_START_TARGET_S: Final = 0.010
"""Fork-server cold start: median spawn-to-handler-loaded time."""

SEARCH_MIN_ACHIEVED: Final = 0.95
SEARCH_MAX_P99_S: Final = 0.100
SEARCH_MAX_ERROR_SHARE: Final = 0.01
SEARCH_STEPS: Final = 6
# A probe that falls this far behind has failed anyway; a short timeout keeps its drain short.
SEARCH_TIMEOUT_S: Final = 1.0

COLD_MODES: Final = (("fresh", True), ("fork", True), ("fork", False))

BUSY_BEFORE_SHARE: Final = 0.10
"""Warn when more than this share of the machine was busy just before a run."""
OTHER_WORK_SHARE: Final = 0.10
"""Warn when work outside the bench took more than this share of the machine during a load phase."""
GENERATOR_BUSY_SHARE: Final = 0.80
"""Warn when a load generator used more than this share of one core: it may have been the bottleneck."""
PYTHON_BEHIND_WRK: Final = 0.80
"""Warn when the Python generator reached less than this share of wrk's throughput against lean."""

Progress = Callable[[str], None]
_T = TypeVar("_T")


# ------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class BenchOptions:
    duration_s: float = 10.0
    """Measured seconds of each throughput and latency run."""
    connections: int = 16
    """Closed-loop connections, and the connection cap of every open-loop run."""
    rate_rps: float | None = None
    """Offered rate of the equal-load latency runs; ``None``: half the lower maximum throughput."""
    cold_starts: int = 40
    """Cold invocations per spawn mode (0 skips the cold-start part)."""
    warmup_s: float = 1.0
    """Load sent but not counted at the start of every throughput and latency run."""
    search: bool = True
    """Also search each backend's highest sustainable open-loop rate (about 6 short probes each)."""
    search_probe_s: float = 2.0
    """Measured seconds of each rate-search probe."""
    body_bytes: int = 64
    seed: int = 1
    """Seed of the Poisson schedule; both backends get the same one."""
    start_timeout_s: float = 30.0
    """How long a server may take to print that it is serving, its function to answer a first request,
    and an idle instance to be unloaded before a cold start."""
    repeat: int = 1
    """Complete runs, interleaved: odd runs load lean first, even runs faasd first. Cold starts run once."""
    load_generator: str = "auto"
    """What the throughput and the low-load floor are judged on: ``wrk`` (run beside the Python generator;
    an error when it is not installed), ``python`` (the Python generator alone), ``auto`` (wrk when it is
    on ``PATH``, else the Python generator with a warning)."""
    floor_s: float = 3.0
    """Measured seconds of each low-load run (one connection: lean, then the plain echo server); 0 skips.
    wrk takes whole seconds, so it rounds this to at least 1."""

    def __post_init__(self) -> None:
        _positive("duration", self.duration_s)
        _positive("search probe duration", self.search_probe_s)
        _positive("server start timeout", self.start_timeout_s)
        if not (math.isfinite(self.warmup_s) and self.warmup_s >= 0):
            raise ConfigError(f"warm-up must be a finite number of seconds >= 0, got {self.warmup_s}")
        if not 1 <= self.connections <= 1024:
            raise ConfigError(f"connections must be between 1 and 1024, got {self.connections}")
        if self.rate_rps is not None:
            _positive("rate", self.rate_rps, unit="requests per second")
        # The server keeps its last 10,000 start times; more cold starts could not all be read back.
        if not 0 <= self.cold_starts <= 5000:
            raise ConfigError(f"cold starts must be between 0 and 5000, got {self.cold_starts}")
        if not 0 <= self.body_bytes <= 1 << 20:
            raise ConfigError(f"body size must be between 0 and 1 MiB, got {self.body_bytes} bytes")
        if not 1 <= self.repeat <= MAX_REPEAT:
            raise ConfigError(f"repeat must be between 1 and {MAX_REPEAT} runs, got {self.repeat}")
        if self.load_generator not in LOAD_GENERATORS:
            known = ", ".join(LOAD_GENERATORS)
            raise ConfigError(f"load generator must be one of {known}, got {self.load_generator!r}")
        if not (math.isfinite(self.floor_s) and self.floor_s >= 0):
            raise ConfigError(f"floor duration must be a finite number of seconds >= 0, got {self.floor_s}")

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        """Short runs for smoke tests: 1 s measurements, 10 cold starts, no rate search."""
        settings: dict[str, Any] = {
            "duration_s": 1.0,
            "warmup_s": 0.5,
            "cold_starts": 10,
            "search": False,
            "search_probe_s": 0.5,
            "floor_s": 1.0,
        }
        settings.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**settings)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _positive(what: str, value: float, unit: str = "seconds") -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{what} must be a positive number of {unit}, got {value}")


# ------------------------------------------------------------------------------------------- results


def _num(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _pct(values: npt.NDArray[np.float64] | list[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


@dataclass(frozen=True)
class PhaseCpu:
    """Where the machine's CPU time went during one load phase (CPU seconds; wall_s of wall clock).

    Read from ``/proc`` just before the load generator starts and just after it ends. ``server_s`` is the
    measured server's process tree (gateway, helpers, instances), ``generator_s`` the load-generator
    process from start to end, ``bench_s`` the rest of this bench (its own process, the servers that
    idle, the plain echo server), and :attr:`other_s` what is left of the machine's busy time: other
    people's work, and kernel work charged to no process (interrupts while idle, kernel threads).
    """

    wall_s: float
    cpus: int
    machine_busy_s: float
    """All CPUs' non-idle time (user, nice, system, irq, softirq; not iowait, not steal)."""
    server_s: float
    generator_s: float
    bench_s: float
    steal_s: float
    """Time the hypervisor gave this machine's CPUs to someone else."""

    @property
    def other_s(self) -> float:
        # Clock ticks make each reading coarse (10 ms per process): a small negative rest is noise.
        return max(0.0, self.machine_busy_s - self.server_s - self.generator_s - self.bench_s)

    @property
    def other_cores(self) -> float:
        """Other work as a number of busy cores (1.0: one whole core) over the phase."""
        return self.other_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def server_cores(self) -> float:
        return self.server_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "other_s": self.other_s,
            "other_cores": self.other_cores,
            "server_cores": self.server_cores,
        }


@dataclass
class LoadPhase:
    """One Python load-generator run against one server, as the report shows it (latencies in seconds)."""

    mode: str
    offered_rps: float | None
    duration_s: float
    connections: int
    sent: int
    completed: int
    achieved_rps: float
    errors: int
    """Requests without a 2xx answer: error statuses, connection errors and timeouts."""
    status_counts: dict[int, int]
    p50_s: float
    p90_s: float
    p99_s: float
    p999_s: float
    mean_s: float
    max_s: float
    instances_started: int
    """Instances the server started during the run (a scale-out inside a measurement)."""
    generator_cpu_s: float
    latencies_s: npt.NDArray[np.float64] = field(repr=False, default_factory=lambda: np.empty(0))
    generator: str = "python"
    generator_window_cpu_s: float | None = None
    """The generator's user + system CPU inside the measured window (its steady state)."""
    generator_process_cpu_s: float | None = None
    """The generator process's CPU from start to end (interpreter start-up and output included)."""
    generator_cpu_per_request_s: float | None = None
    """:attr:`generator_window_cpu_s` per response in the window."""
    generator_core_share: float | None = None
    """:attr:`generator_window_cpu_s` as a share of one core over the window (1.0: a whole core)."""
    cpu: PhaseCpu | None = None

    @classmethod
    def from_result(cls, result: LoadResult, connections: int, instances_started: int) -> LoadPhase:
        ok = sum(count for status, count in result.status_counts.items() if 200 <= status < 300)
        lat = result.latencies_s
        return cls(
            mode=result.mode,
            offered_rps=result.offered_rps,
            duration_s=result.duration_s,
            connections=connections,
            sent=result.sent,
            completed=result.completed,
            achieved_rps=result.achieved_rps,
            errors=sum(result.status_counts.values()) - ok,
            status_counts=dict(result.status_counts),
            p50_s=_pct(lat, 50),
            p90_s=_pct(lat, 90),
            p99_s=_pct(lat, 99),
            p999_s=_pct(lat, 99.9),
            mean_s=float(lat.mean()) if len(lat) else math.nan,
            max_s=float(lat.max()) if len(lat) else math.nan,
            instances_started=instances_started,
            generator_cpu_s=result.generator_cpu_s,
            latencies_s=lat,
            generator_window_cpu_s=result.window_cpu_s,
            generator_process_cpu_s=result.process_cpu_s,
            generator_cpu_per_request_s=result.cpu_per_request_s,
            generator_core_share=result.core_share,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key in ("latencies_s", "cpu"):
                continue  # tens of thousands of numbers: the percentiles say what a report needs
            out[key] = _num(value) if isinstance(value, float) else value
        out["status_counts"] = {str(status): count for status, count in sorted(self.status_counts.items())}
        out["cpu"] = self.cpu.to_json() if self.cpu is not None else None
        return out


@dataclass
class WrkPhase:
    """One wrk run against one server: wrk's own numbers, and where the CPU went meanwhile."""

    result: WrkResult
    instances_started: int
    cpu: PhaseCpu | None = None
    generator: str = "wrk"

    @property
    def achieved_rps(self) -> float:
        return self.result.rps

    @property
    def p50_s(self) -> float:
        return self.result.p50_s

    @property
    def p99_s(self) -> float:
        return self.result.p99_s

    @property
    def errors(self) -> int:
        return self.result.errors

    @property
    def completed(self) -> int:
        return self.result.requests

    @property
    def generator_cpu_per_request_s(self) -> float | None:
        return self.result.cpu_per_request_s

    @property
    def generator_core_share(self) -> float | None:
        return self.result.core_share

    def to_json(self) -> dict[str, Any]:
        return {
            **self.result.to_json(),
            "instances_started": self.instances_started,
            "cpu": self.cpu.to_json() if self.cpu is not None else None,
        }


Measured = LoadPhase | WrkPhase
"""A load phase by either generator: both answer achieved_rps, p50_s, p99_s, errors and the CPU fields."""


@dataclass
class RateProbe:
    offered_rps: float
    achieved_rps: float
    p99_s: float
    errors: int
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "p99_s": _num(self.p99_s)}


@dataclass
class RateSearch:
    """The highest open-loop rate a backend sustained; ``None`` when even the lowest probe failed."""

    sustainable_rps: float | None
    probes: list[RateProbe]
    criterion: str = (
        f"achieved >= {SEARCH_MIN_ACHIEVED:.0%} of offered, p99 < {SEARCH_MAX_P99_S * 1e3:g} ms, "
        f"errors <= {SEARCH_MAX_ERROR_SHARE:.0%}"
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "sustainable_rps": self.sustainable_rps,
            "criterion": self.criterion,
            "probes": [probe.to_json() for probe in self.probes],
        }


@dataclass
class Warmup:
    requests: int
    rounds: int
    instances: int
    stable: bool
    """Whether the instance count stopped changing (it did not within the round limit otherwise)."""


@dataclass
class BackendResult:
    backend: str
    warmup: Warmup
    throughput: LoadPhase
    """The Python generator's closed loop."""
    search: RateSearch | None = None
    latency: LoadPhase | None = None
    server_warnings: list[str] = field(default_factory=list)
    wrk: WrkPhase | None = None
    """wrk's closed loop, right after the Python generator's (when wrk is used)."""

    def max_throughput(self, generator: str) -> Measured:
        """The closed-loop run of ``generator`` ("wrk" or "python")."""
        if generator == "wrk":
            if self.wrk is None:
                raise StratoError(f"{self.backend}: wrk did not run")
            return self.wrk
        return self.throughput

    def phases(self) -> list[tuple[str, Measured]]:
        """Every load phase of this backend with its name, in the order they ran."""
        named: list[tuple[str, Measured]] = [("throughput", self.throughput)]
        if self.wrk is not None:
            named.append(("throughput", self.wrk))
        if self.latency is not None:
            named.append(("latency", self.latency))
        return named

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "warmup": asdict(self.warmup),
            "throughput": self.throughput.to_json(),
            "wrk": self.wrk.to_json() if self.wrk else None,
            "search": self.search.to_json() if self.search else None,
            "latency": self.latency.to_json() if self.latency else None,
            "server_warnings": self.server_warnings,
        }


@dataclass
class Ratio:
    """lean / faasd (or lean / plain echo) for one metric, against its target."""

    metric: str
    lean: float
    faasd: float
    """The denominator: faasd's number, or the plain echo server's for the low-load floor."""
    value: float | None
    target: float
    better: str
    """``"lower"``: the ratio must be <= target (latency); ``"higher"``: >= target (throughput)."""
    source: str = "python"
    """The load generator whose numbers these are: ``python`` or ``wrk``."""
    against: str = "faasd"
    """What the denominator measured: ``faasd``, or ``plain_echo`` for the low-load floor."""

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.target if self.better == "lower" else self.value >= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "lean": _num(self.lean),
            self.against: _num(self.faasd),
            "value": self.value,
            "target": self.target,
            "comparison": "<=" if self.better == "lower" else ">=",
            "met": self.met,
            "source": self.source,
        }


def _ratio(
    metric: str, lean: float, faasd: float, target: float, better: str, source: str, against: str = "faasd"
) -> Ratio:
    value = lean / faasd if math.isfinite(lean) and math.isfinite(faasd) and faasd > 0 else None
    return Ratio(metric, lean, faasd, value, target, better, source, against)


@dataclass
class FloorResult:
    """The low-load floor of one run: lean's warm p50 at one connection against a plain Python echo."""

    generator: str
    lean: Measured
    plain: Measured
    ratio: Ratio

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "lean": self.lean.to_json(),
            "plain_echo": self.plain.to_json(),
            "ratio": self.ratio.to_json(),
        }


@dataclass
class RunResult:
    """One complete run: both backends' throughput and equal-load latency, and the low-load floor."""

    index: int
    """1-based."""
    order: tuple[str, ...]
    """The order the backends were loaded in (alternates from run to run)."""
    busy_share_before: float | None
    throughput_source: str
    """The generator the throughput ratio and the floor are judged on: ``wrk`` or ``python``."""
    rate_rps: float
    rate_source: str
    backends: dict[str, BackendResult]
    ratios: dict[str, Ratio]
    """``throughput``, ``median_latency``, ``p99_latency`` and, with a floor, ``floor_p50``."""
    floor: FloorResult | None
    warnings: list[str]
    elapsed_s: float

    def phases(self) -> list[tuple[str, str, Measured]]:
        """``(server, phase, measurement)`` for every load phase of the run."""
        named = [(name, phase, m) for name in self.order for phase, m in self.backends[name].phases()]
        if self.floor is not None:
            named += [("lean", "floor", self.floor.lean), ("plain echo", "floor", self.floor.plain)]
        return named

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "order": list(self.order),
            "busy_share_before": self.busy_share_before,
            "throughput_source": self.throughput_source,
            "rate_rps": self.rate_rps,
            "rate_source": self.rate_source,
            "backends": {name: result.to_json() for name, result in self.backends.items()},
            "ratios": {name: ratio.to_json() for name, ratio in self.ratios.items()},
            "floor": self.floor.to_json() if self.floor is not None else None,
            "warnings": self.warnings,
            "elapsed_s": self.elapsed_s,
        }


@dataclass(frozen=True)
class RatioSpread:
    """One ratio over the runs: every run's value, their min / median / max, and the verdict."""

    key: str
    metric: str
    values: tuple[float | None, ...]
    """Per run, in run order; ``None`` where a run could not compute it."""
    minimum: float | None
    median: float | None
    maximum: float | None
    target: float
    better: str
    rule: str
    """How the runs are judged, in words."""
    met: bool
    source: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"values": list(self.values)}


def spread(key: str, ratios: list[Ratio]) -> RatioSpread:
    """Judge one ratio over runs: throughput's median >= its target and every run >= 4x; any other
    ratio must meet its target in every run. A run without a value fails the rule."""
    if not ratios:
        raise ConfigError(f"no runs to summarise {key} over")
    first = ratios[0]
    values = tuple(ratio.value for ratio in ratios)
    known = [value for value in values if value is not None]
    low = min(known) if known else None
    mid = float(statistics.median(known)) if known else None
    high = max(known) if known else None
    complete = len(known) == len(values)
    comparison = "<=" if first.better == "lower" else ">="
    if key == "throughput":
        rule = f"median >= {first.target:g}x, every run >= {THROUGHPUT_FLOOR:g}x"
        met = (
            complete
            and mid is not None
            and low is not None
            and mid >= first.target
            and low >= THROUGHPUT_FLOOR
        )
    else:
        rule = f"every run {comparison} {first.target:g}"
        bound = high if first.better == "lower" else low
        met = (
            complete
            and bound is not None
            and (bound <= first.target if first.better == "lower" else bound >= first.target)
        )
    sources = sorted({ratio.source for ratio in ratios})
    return RatioSpread(
        key=key,
        metric=first.metric,
        values=values,
        minimum=low,
        median=mid,
        maximum=high,
        target=first.target,
        better=first.better,
        rule=rule,
        met=bool(met),
        source=" and ".join(sources),
    )


@dataclass(frozen=True)
class RepeatSummary:
    """Every judged ratio over the runs (:func:`spread`); :attr:`met` when all of them are."""

    runs: int
    spreads: tuple[RatioSpread, ...]

    @classmethod
    def of(cls, runs: list[RunResult]) -> RepeatSummary:
        keys: list[str] = []
        for run in runs:
            keys += [key for key in run.ratios if key not in keys]
        spreads = tuple(
            spread(key, [run.ratios[key] for run in runs if key in run.ratios])
            # A ratio some run lacks (the floor when it is skipped) would be judged on fewer runs than the
            # others; every run has the same phases, so this only guards the summary's consistency.
            for key in keys
            if all(key in run.ratios for run in runs)
        )
        return cls(len(runs), spreads)

    @property
    def met(self) -> bool:
        return all(item.met for item in self.spreads)

    def get(self, key: str) -> RatioSpread | None:
        return next((item for item in self.spreads if item.key == key), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "met": self.met,
            "ratios": {item.key: item.to_json() for item in self.spreads},
        }


@dataclass
class ColdStarts:
    """Cold invocations of the lean backend in one spawn mode (times in seconds)."""

    spawn: str
    sandbox: bool
    invocations: int
    cold_starts: int
    """Invocations the server counted as cold (should equal ``invocations``)."""
    errors: int
    server_start_s: list[float]
    """Server-side spawn-to-handler-loaded times of the instances these invocations started."""
    client_latency_s: list[float]
    """Client-side latency of each cold invocation."""
    server_warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.spawn}{'' if self.sandbox else ' (no sandbox)'}"

    @property
    def start_p50_s(self) -> float:
        return _pct(self.server_start_s, 50)

    @property
    def start_p99_s(self) -> float:
        return _pct(self.server_start_s, 99)

    @property
    def client_p50_s(self) -> float:
        return _pct(self.client_latency_s, 50)

    @property
    def client_p99_s(self) -> float:
        return _pct(self.client_latency_s, 99)

    @property
    def target_s(self) -> float | None:
        """The fork-server target applies to the platform as deployed: fork spawn, sandbox on."""
        return FORK_START_TARGET_S if self.spawn == "fork" and self.sandbox else None

    @property
    def met(self) -> bool | None:
        if self.target_s is None:
            return None
        return math.isfinite(self.start_p50_s) and self.start_p50_s <= self.target_s

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "spawn": self.spawn,
            "sandbox": self.sandbox,
            "invocations": self.invocations,
            "cold_starts": self.cold_starts,
            "errors": self.errors,
            "server_start_p50_s": _num(self.start_p50_s),
            "server_start_p99_s": _num(self.start_p99_s),
            "client_p50_s": _num(self.client_p50_s),
            "client_p99_s": _num(self.client_p99_s),
            "target_p50_s": self.target_s,
            "met": self.met,
            "server_start_s": self.server_start_s,
            "client_latency_s": self.client_latency_s,
            "server_warnings": self.server_warnings,
        }


@dataclass
class BenchReport:
    options: BenchOptions
    machine: dict[str, Any]
    load_generator: str
    """The generator the targets were judged on: ``wrk`` or ``python``."""
    runs: list[RunResult]
    summary: RepeatSummary
    cold_starts: list[ColdStarts]
    warnings: list[str]
    """Every warning of the bench, those of a run prefixed with its number when there are several."""
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "strato-faas-bench/2",
            "options": self.options.to_json(),
            "machine": self.machine,
            "load_generator": {
                "requested": self.options.load_generator,
                "judged_on": self.load_generator,
                "wrk": self.machine.get("wrk"),
            },
            "runs": [run.to_json() for run in self.runs],
            "summary": self.summary.to_json(),
            "cold_starts": [cold.to_json() for cold in self.cold_starts],
            "warnings": self.warnings,
            "elapsed_s": self.elapsed_s,
        }


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat; None where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        values = [int(value) for value in fields[:8]]
    except (OSError, ValueError, IndexError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def busy_share(interval_s: float = 0.5) -> float | None:
    """Share of the machine's CPU time in use over ``interval_s`` (other work skews every number here)."""
    before = _cpu_times()
    time.sleep(interval_s)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def _clock_tick_s() -> float:
    try:
        return 1.0 / os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 0.01


_TICK_S: Final = _clock_tick_s()


@dataclass(frozen=True)
class _CpuSnapshot:
    """One reading of the machine's CPU counters and of every process's (in clock ticks)."""

    wall: float
    busy: int
    steal: int
    cpus: int
    processes: dict[int, tuple[int, int]]
    """pid -> (parent pid, CPU ticks of the process and of its children it has waited for)."""

    def tree_ticks(self, root: int) -> int:
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in self.processes.items():
            children.setdefault(parent, []).append(pid)
        total, todo, seen = 0, [root], set()
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in self.processes:
                continue
            seen.add(pid)
            total += self.processes[pid][1]
            todo += children.get(pid, [])
        return total


def _cpu_snapshot() -> _CpuSnapshot | None:
    """The machine's and every process's CPU counters, or ``None`` without a Linux ``/proc``."""
    wall = time.perf_counter()
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        values = [int(value) for value in lines[0].split()[1:9]]
        names = os.listdir("/proc")
    except (OSError, ValueError, IndexError):
        return None
    values += [0] * (8 - len(values))
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
    processes: dict[int, tuple[int, int]] = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses: the fields start after the last ")".
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            parent = int(fields[1])
            utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        processes[int(name)] = (parent, utime + stime + cutime + cstime)
    return _CpuSnapshot(wall, user + nice + system + irq + softirq, steal, max(cpus, 1), processes)


def _phase_cpu(
    before: _CpuSnapshot | None, after: _CpuSnapshot | None, server_pid: int, generator_s: float
) -> PhaseCpu | None:
    """Where the CPU went between two snapshots, the load generator's share given (it has exited by then,
    so only its own resource usage knows it)."""
    if before is None or after is None:
        return None
    me = os.getpid()
    server_s = max(0, after.tree_ticks(server_pid) - before.tree_ticks(server_pid)) * _TICK_S
    # This process's tree includes every server, the echo server and, once waited for, the generator.
    ours_s = max(0, after.tree_ticks(me) - before.tree_ticks(me)) * _TICK_S
    return PhaseCpu(
        wall_s=after.wall - before.wall,
        cpus=after.cpus,
        machine_busy_s=max(0, after.busy - before.busy) * _TICK_S,
        server_s=server_s,
        generator_s=generator_s,
        bench_s=max(0.0, ours_s - server_s - generator_s),
        steal_s=max(0, after.steal - before.steal) * _TICK_S,
    )


def wrk_version(path: str) -> str | None:
    """wrk's first line of ``wrk -v`` ("wrk debian/4.1.0-3+b2 [epoll] ..."), or ``None``."""
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].partition(" Copyright")[0].strip() if first else None


def resolve_load_generator(choice: str) -> tuple[str, str | None]:
    """``(generator the targets are judged on, wrk's path or None)`` for ``--load-generator choice``.

    :class:`ConfigError` when wrk is asked for and not installed: found out before anything starts.
    """
    if choice not in LOAD_GENERATORS:
        raise ConfigError(f"load generator must be one of {', '.join(LOAD_GENERATORS)}, got {choice!r}")
    if choice == "python":
        return "python", None
    path = find_wrk()
    if path is None:
        if choice == "wrk":
            raise ConfigError(f"load generator wrk asked for, but wrk is not on PATH: {WRK_INSTALL_HINT}")
        return "python", None
    return "wrk", path


def machine_info() -> dict[str, Any]:
    """What the numbers depend on; servers and load generator run on this interpreter."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    uvloop = importlib.util.find_spec("uvloop") is not None
    uvloop_version = None
    if uvloop:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            uvloop_version = importlib.metadata.version("uvloop")
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_model": model or platform.processor() or None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "uvloop": uvloop,
        "uvloop_version": uvloop_version,
        "root": hasattr(os, "geteuid") and os.geteuid() == 0,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ------------------------------------------------------------------------------------------- servers


@contextlib.contextmanager
def bench_server(
    root: Path, *, backend: str, spawn: str, policy: str, sandbox: bool, timeout_s: float
) -> Iterator[ServerProcess]:
    server = ServerProcess.for_backend(root, backend=backend, spawn=spawn, policy=policy, sandbox=sandbox)
    with running_server(server, timeout_s=timeout_s) as running:
        yield running


def _deploy_echo(client: FaasClient, connections: int) -> None:
    # One invocation per instance, as the paper's function containers run; the in-flight limit sits well
    # above anything the load generator sends so that no request is refused with 429.
    client.deploy(
        FUNCTION,
        files={"handler.py": ECHO_HANDLER},
        memory="128Mi",
        timeout="30s",
        concurrency=1,
        maxConcurrency=max(256, 2 * connections),
    )


def _wait_until(ready: Callable[[], bool], timeout_s: float, failure: str) -> None:
    """Poll ``ready`` until it holds; :class:`StratoError` with ``failure`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise StratoError(failure)
        time.sleep(0.005)


def _instances(client: FaasClient) -> tuple[int, int]:
    """(live instances of the echo function, instances the server has started in all)."""
    stats = client.stats()
    return int(stats["functions"][FUNCTION]["instances"]), len(stats["instance_starts_s"])


# ------------------------------------------------------------------------------------------- phases


class _Bench:
    def __init__(
        self,
        options: BenchOptions,
        progress: Progress | None,
        *,
        generator: str = "python",
        wrk: str | None = None,
    ) -> None:
        self.options = options
        self.progress = progress
        self.generator = generator
        """What the targets are judged on: "wrk" (then wrk also runs) or "python"."""
        self.wrk = wrk if generator == "wrk" else None
        self.phase = 0
        self.total = self._count_phases()
        self.body = b"x" * options.body_bytes
        self.run_label = ""

    def _count_phases(self) -> int:
        options = self.options
        # start + warm-up, throughput, [wrk], [search], latency
        per_backend = 3 + (self.wrk is not None) + options.search
        per_run = len(BACKENDS) * per_backend + (2 if options.floor_s > 0 else 0)
        return options.repeat * per_run + (len(COLD_MODES) if options.cold_starts else 0)

    def say(self, text: str) -> None:
        self.phase += 1
        if self.progress is not None:
            self.progress(f"[{self.phase}/{self.total}] {self.run_label}{text}")

    def target(self, server: ServerProcess) -> Target:
        return Target.from_url(f"{server.url}/function/{FUNCTION}", self.body)

    def warm_up(self, server: ServerProcess) -> Warmup:
        """Once the function answers, closed-loop bursts until the instance count stops changing and a
        few hundred requests ran."""
        options = self.options
        client = server.client(timeout_s=options.start_timeout_s)
        target = self.target(server)
        requests = rounds = 0
        previous = -1
        stable = False
        burst_s = 0.3 if options.duration_s < 5 else 0.5
        try:
            # A burst is shorter than a cold start on a busy machine: first wait for an instance to answer
            # (the request waits for it to boot).
            first = client.invoke(FUNCTION, self.body)
            if first.status != 200:
                raise StratoError(
                    f"the {server.describe} answered the first request to {FUNCTION} with {first.status}: "
                    f"{first.body[:200].decode(errors='replace')}"
                )
            while rounds < 20:
                result = run_in_subprocess(
                    target, "closed", connections=options.connections, duration_s=burst_s, warmup_s=0.0
                )
                rounds += 1
                requests += result.completed
                instances, _ = _instances(client)
                # A burst the server answered nothing of (starved of CPU) is no sign of a steady state.
                if instances == previous and requests >= 300 and result.completed > 0:
                    stable = True
                    break
                previous = instances
            return Warmup(requests, rounds, instances, stable)
        finally:
            client.close()

    def _counting(self, server: ServerProcess, run: Callable[[], _T]) -> tuple[_T, int]:
        """``run()``'s result and the instances the server started meanwhile."""
        client = server.client()
        try:
            _, before = _instances(client)
            result = run()
            _, after = _instances(client)
        finally:
            client.close()
        return result, after - before

    def _python(self, target: Target, server_pid: int, run: Callable[[Target], LoadResult]) -> LoadPhase:
        """A Python-generator phase with the CPU split; its connection count is the bench's."""
        before = _cpu_snapshot()
        result = run(target)
        after = _cpu_snapshot()
        phase = LoadPhase.from_result(result, self.options.connections, 0)
        generator_s = result.process_cpu_s if result.process_cpu_s is not None else result.generator_cpu_s
        phase.cpu = _phase_cpu(before, after, server_pid, generator_s)
        return phase

    def _wrk(self, target: Target, server_pid: int, connections: int, duration_s: float) -> WrkPhase:
        assert self.wrk is not None
        before = _cpu_snapshot()
        # The Python generator's default timeout, so that both count a stalled request alike.
        result = run_wrk(target, connections, duration_s, timeout_s=10.0, wrk=self.wrk)
        after = _cpu_snapshot()
        return WrkPhase(result, 0, _phase_cpu(before, after, server_pid, result.cpu_s))

    def measure(self, server: ServerProcess, run: Callable[[Target], LoadResult]) -> LoadPhase:
        target = self.target(server)
        phase, started = self._counting(server, lambda: self._python(target, _pid(server), run))
        phase.instances_started = started
        return phase

    def wrk_throughput(self, server: ServerProcess) -> WrkPhase:
        """wrk's closed loop against ``server``: the Python one's connections, duration, URL and body."""
        target, options = self.target(server), self.options
        phase, started = self._counting(
            server, lambda: self._wrk(target, _pid(server), options.connections, options.duration_s)
        )
        phase.instances_started = started
        return phase

    def floor_phase(self, target: Target, server_pid: int) -> Measured:
        """One connection, closed loop, ``floor_s``: the judged generator's warm latency at low load."""
        options = self.options
        if self.wrk is not None:
            return self._wrk(target, server_pid, 1, options.floor_s)
        phase = self._python(
            target,
            server_pid,
            lambda t: run_in_subprocess(
                t, "closed", connections=1, duration_s=options.floor_s, warmup_s=min(options.warmup_s, 0.5)
            ),
        )
        phase.connections = 1
        return phase

    def throughput(self, server: ServerProcess) -> LoadPhase:
        options = self.options
        return self.measure(
            server,
            lambda target: run_in_subprocess(
                target,
                "closed",
                connections=options.connections,
                duration_s=options.duration_s,
                warmup_s=options.warmup_s,
            ),
        )

    def open_loop(
        self, server: ServerProcess, rate: float, duration_s: float, warmup_s: float, timeout_s: float = 10.0
    ) -> LoadPhase:
        options = self.options
        return self.measure(
            server,
            lambda target: run_in_subprocess(
                target,
                "open",
                rate_rps=rate,
                duration_s=duration_s,
                warmup_s=warmup_s,
                arrival="poisson",
                seed=options.seed,
                max_connections=options.connections,
                timeout_s=timeout_s,
            ),
        )

    def search(self, server: ServerProcess, ceiling_rps: float) -> RateSearch:
        """Bisection between 0 and a little above the closed-loop maximum, starting half way."""
        low, high = 0.0, 1.1 * ceiling_rps
        rate = ceiling_rps / 2
        probes: list[RateProbe] = []
        best: float | None = None
        for _ in range(SEARCH_STEPS):
            phase = self.open_loop(
                server,
                rate,
                self.options.search_probe_s,
                warmup_s=min(self.options.warmup_s, 0.5),
                timeout_s=SEARCH_TIMEOUT_S,
            )
            passed = (
                phase.achieved_rps >= SEARCH_MIN_ACHIEVED * rate
                and math.isfinite(phase.p99_s)
                and phase.p99_s < SEARCH_MAX_P99_S
                and phase.errors <= SEARCH_MAX_ERROR_SHARE * max(phase.sent, 1)
            )
            probes.append(RateProbe(rate, phase.achieved_rps, phase.p99_s, phase.errors, passed))
            if passed:
                low = rate
                best = rate if best is None else max(best, rate)
            else:
                high = rate
                # Let the server finish what an overloaded probe left queued before the next probe.
                time.sleep(0.3)
            rate = (low + high) / 2
        return RateSearch(best, probes)

    def cold(self, root: Path, spawn: str, sandbox: bool) -> ColdStarts:
        options = self.options
        with bench_server(
            root,
            backend="lean",
            spawn=spawn,
            policy="fixed:1ms",
            sandbox=sandbox,
            timeout_s=options.start_timeout_s,
        ) as server:
            client = server.client(timeout_s=options.start_timeout_s)

            def unloaded() -> None:
                # fixed:1ms unloads an idle instance at once, but a busy machine runs that timer late.
                _wait_until(
                    lambda: _instances(client)[0] == 0,
                    options.start_timeout_s,
                    f"the {server.describe} kept {FUNCTION}'s idle instance for more than "
                    f"{options.start_timeout_s:g} s under fixed:1ms",
                )

            try:
                _deploy_echo(client, 1)
                # Discarded: the first start after a deployment also pays for cold page caches.
                client.invoke(FUNCTION, self.body)
                stats = client.stats()
                starts_before = len(stats["instance_starts_s"])
                cold_before = int(stats["functions"][FUNCTION]["cold_starts"])
                latencies: list[float] = []
                errors = 0
                for _ in range(options.cold_starts):
                    unloaded()
                    started = time.perf_counter()
                    result = client.invoke(FUNCTION, self.body)
                    latencies.append(time.perf_counter() - started)
                    errors += not 200 <= result.status < 300
                stats = client.stats()
            finally:
                client.close()
            return ColdStarts(
                spawn=spawn,
                sandbox=sandbox,
                invocations=options.cold_starts,
                cold_starts=int(stats["functions"][FUNCTION]["cold_starts"]) - cold_before,
                errors=errors,
                server_start_s=[float(s) for s in stats["instance_starts_s"][starts_before:]],
                client_latency_s=latencies,
                server_warnings=server.warnings(),
            )

    def run(self, root: Path, index: int, order: tuple[str, ...], echo: tuple[str, int] | None) -> RunResult:
        """One complete run (see the module docstring), backends loaded in ``order``."""
        options = self.options
        started = time.perf_counter()
        warnings: list[str] = []
        busy = busy_share()
        if busy is not None and busy > BUSY_BEFORE_SHARE:
            warnings.append(
                f"{busy:.0%} of the CPUs were busy with other work just before the run: "
                "expect noisy numbers, and rerun on a quiet machine"
            )
        results: dict[str, BackendResult] = {}
        with contextlib.ExitStack() as servers:
            running: dict[str, ServerProcess] = {}
            for backend in order:
                self.say(f"{backend}: start the server, deploy {FUNCTION}, warm up")
                server = servers.enter_context(
                    bench_server(
                        root / backend,
                        backend=backend,
                        spawn="fork",
                        policy="never-unload",
                        sandbox=True,
                        timeout_s=options.start_timeout_s,
                    )
                )
                running[backend] = server
                with contextlib.closing(server.client()) as client:
                    _deploy_echo(client, options.connections)
                warmup = self.warm_up(server)
                self.say(
                    f"{backend}: max throughput, closed loop, {options.connections} connections, "
                    f"{options.duration_s:g} s (Python generator)"
                )
                results[backend] = BackendResult(backend, warmup, self.throughput(server))
                if results[backend].throughput.completed == 0:
                    raise StratoError(f"the {server.describe} completed no request in the throughput run")
                if self.wrk is not None:
                    self.say(
                        f"{backend}: max throughput, wrk -t1 -c{options.connections} "
                        f"-d{max(1, round(options.duration_s))}s"
                    )
                    wrk_phase = results[backend].wrk = self.wrk_throughput(server)
                    if wrk_phase.completed == 0:
                        raise StratoError(f"the {server.describe} completed no request of wrk's")
                if options.search:
                    ceiling = results[backend].throughput.achieved_rps
                    self.say(
                        f"{backend}: rate search, open loop, {SEARCH_STEPS} probes of "
                        f"{options.search_probe_s:g} s up to {1.1 * ceiling:,.0f} rps"
                    )
                    results[backend].search = self.search(server, ceiling)

            maxima = {name: results[name].max_throughput(self.generator).achieved_rps for name in BACKENDS}
            if options.rate_rps is not None:
                rate, source = options.rate_rps, "option --rate"
            else:
                rate = 0.5 * min(maxima.values())
                source = f"50 % of the lower max throughput ({_generator_name(self.generator)})"
            for backend in order:
                search = results[backend].search
                if search is not None and (search.sustainable_rps or 0.0) < rate:
                    warnings.append(
                        f"{backend} sustained at most {search.sustainable_rps or 0:,.0f} rps in the rate "
                        f"search, below the equal-load rate of {rate:,.0f} rps: its latencies include "
                        "overload queueing"
                    )
            for backend in order:
                self.say(
                    f"{backend}: latency at {rate:,.0f} rps, open loop, Poisson, {options.duration_s:g} s"
                )
                results[backend].latency = self.open_loop(
                    running[backend], rate, options.duration_s, warmup_s=options.warmup_s
                )
            floor = None
            if echo is not None:
                floor = self.floor(running["lean"], echo, lean_first=order[0] == "lean")
            for backend in order:
                results[backend].server_warnings = running[backend].warnings()

        lean, faasd = results["lean"], results["faasd"]
        assert lean.latency is not None and faasd.latency is not None
        ratios = {
            "median_latency": _ratio(
                "median latency",
                lean.latency.p50_s,
                faasd.latency.p50_s,
                MEDIAN_TARGET,
                "lower",
                "python",
            ),
            "p99_latency": _ratio(
                "p99 latency", lean.latency.p99_s, faasd.latency.p99_s, P99_TARGET, "lower", "python"
            ),
            "throughput": _ratio(
                "throughput", maxima["lean"], maxima["faasd"], THROUGHPUT_TARGET, "higher", self.generator
            ),
        }
        if floor is not None:
            ratios["floor_p50"] = floor.ratio
        run = RunResult(
            index=index,
            order=order,
            busy_share_before=busy,
            throughput_source=self.generator,
            rate_rps=rate,
            rate_source=source,
            backends=results,
            ratios=ratios,
            floor=floor,
            warnings=warnings,
            elapsed_s=0.0,
        )
        warnings += _run_warnings(run)
        run.elapsed_s = time.perf_counter() - started
        return run

    def floor(self, lean: ServerProcess, echo: tuple[str, int], *, lean_first: bool) -> FloorResult:
        """Lean's warm p50 at one connection and the plain echo server's, with the judged generator."""
        echo_url, echo_pid = echo
        servers = {
            "lean": (Target.from_url(f"{lean.url}/function/{FUNCTION}", self.body), _pid(lean)),
            "plain echo": (Target.from_url(f"{echo_url}/function/{FUNCTION}", self.body), echo_pid),
        }
        phases: dict[str, Measured] = {}
        for name in ("lean", "plain echo") if lean_first else ("plain echo", "lean"):
            self.say(
                f"low-load floor: {name}, one connection, closed loop, {self.options.floor_s:g} s "
                f"({_generator_name(self.generator)})"
            )
            target, pid = servers[name]
            phases[name] = self.floor_phase(target, pid)
        ratio = _ratio(
            "low-load p50, lean / plain echo",
            phases["lean"].p50_s,
            phases["plain echo"].p50_s,
            PLAIN_ECHO_TARGET,
            "lower",
            self.generator,
            against="plain_echo",
        )
        return FloorResult(self.generator, phases["lean"], phases["plain echo"], ratio)


def _pid(server: ServerProcess) -> int:
    assert server.process is not None, "the server is not running"
    return server.process.pid


def _generator_name(generator: str) -> str:
    return "wrk" if generator == "wrk" else "Python generator"


def _run_warnings(run: RunResult) -> list[str]:
    """What in one run's numbers deserves a second look: unsettled servers, a busy machine, a generator
    near its limit."""
    warnings: list[str] = []
    for backend, result in run.backends.items():
        if not result.warmup.stable:
            warnings.append(
                f"{backend}: the instance count was still changing after "
                f"{result.warmup.rounds} warm-up rounds"
            )
    for backend in run.order:
        for phase_name, phase in run.backends[backend].phases():
            if phase.instances_started:
                warnings.append(
                    f"{backend}: {phase.instances_started} instance(s) started during the {phase_name} run "
                    f"({_generator_name(phase.generator)})"
                )
    busy_generator: list[str] = []
    other_work: list[tuple[str, float]] = []
    stolen: list[tuple[str, float]] = []
    phases = run.phases()
    cpus = 1
    for server, phase_name, phase in phases:
        label = f"{server} {phase_name} ({_generator_name(phase.generator)})"
        share = phase.generator_core_share
        if share is not None and share > GENERATOR_BUSY_SHARE:
            busy_generator.append(f"{label} {share:.0%}")
        cpu = phase.cpu
        if cpu is None or cpu.wall_s <= 0:
            continue
        cpus = cpu.cpus
        if cpu.other_cores > OTHER_WORK_SHARE * cpu.cpus:
            other_work.append((label, cpu.other_cores))
        if cpu.steal_s / cpu.wall_s > OTHER_WORK_SHARE * cpu.cpus:
            stolen.append((label, cpu.steal_s / cpu.wall_s))
    if busy_generator:
        judged = " (the targets are judged on wrk's numbers)" if run.throughput_source == "wrk" else ""
        warnings.append(
            f"the load generator used more than {GENERATOR_BUSY_SHARE:.0%} of a core in: "
            f"{', '.join(busy_generator)}; it may have been the bottleneck there{judged}"
        )
    for found, what in ((other_work, "other work took"), (stolen, "the hypervisor took")):
        if not found:
            continue
        low, high = (f"{f(value for _, value in found):.2f}" for f in (min, max))
        cores = low if low == high else f"{low}-{high}"
        which = "" if len(found) == len(phases) else f": {', '.join(label for label, _ in found)}"
        warnings.append(
            f"{what} {cores} cores (more than {OTHER_WORK_SHARE:.0%} of the "
            f"machine's {cpus} CPUs) in {len(found)} of {len(phases)} load phases{which}: "
            "expect noisy numbers"
        )
    lean = run.backends["lean"]
    if lean.wrk is not None and lean.wrk.achieved_rps > 0:
        share = lean.throughput.achieved_rps / lean.wrk.achieved_rps
        if share < PYTHON_BEHIND_WRK:
            warnings.append(
                f"the Python generator reached {lean.throughput.achieved_rps:,.0f} rps against lean, "
                f"{share:.0%} of wrk's {lean.wrk.achieved_rps:,.0f} rps: it was the bottleneck there "
                "(the throughput ratio is judged on wrk's)"
            )
    return warnings


def run_bench(options: BenchOptions | None = None, *, progress: Progress | None = None) -> BenchReport:
    """Run the whole benchmark (see the module docstring); ``progress`` gets one line per phase."""
    options = options or BenchOptions()
    # Before anything starts: asking for wrk without it is an error, not minutes of runs without it.
    generator, wrk = resolve_load_generator(options.load_generator)
    bench = _Bench(options, progress, generator=generator, wrk=wrk)
    started = time.perf_counter()
    warnings: list[str] = []
    machine = machine_info()
    machine["wrk"] = {"path": wrk, "version": wrk_version(wrk)} if wrk is not None else None
    if generator == "python" and options.load_generator == "auto":
        warnings.append(
            "wrk is not installed, so the throughput is judged on the Python generator's numbers, which may "
            f"be its own limit rather than the server's: {WRK_INSTALL_HINT}"
        )
    runs: list[RunResult] = []
    with (
        tempfile.TemporaryDirectory(prefix="strato-bench-", ignore_cleanup_errors=True) as tmp,
        contextlib.ExitStack() as helpers,
    ):
        root = Path(tmp)
        echo = None
        if options.floor_s > 0:
            echo = helpers.enter_context(plain_echo_server(timeout_s=options.start_timeout_s))
        for index in range(1, options.repeat + 1):
            # Alternate which backend goes first, so neither always meets the machine in the same state.
            order = BACKENDS if index % 2 == 1 else tuple(reversed(BACKENDS))
            bench.run_label = f"run {index}/{options.repeat}: " if options.repeat > 1 else ""
            runs.append(bench.run(root / f"run-{index}", index, order, echo))
        helpers.close()
        bench.run_label = ""

        cold: list[ColdStarts] = []
        if options.cold_starts:
            for spawn, sandbox in COLD_MODES:
                label = f"{spawn} spawn, sandbox {'on' if sandbox else 'off'}"
                bench.say(f"cold starts: lean, {label}, {options.cold_starts} invocations")
                cold.append(bench.cold(root / f"cold-{spawn}-{int(sandbox)}", spawn, sandbox))

    for run in runs:
        prefix = f"run {run.index}: " if options.repeat > 1 else ""
        warnings += [prefix + warning for warning in run.warnings]
    for entry in cold:
        if entry.cold_starts != entry.invocations:
            warnings.append(
                f"cold starts ({entry.label}): {entry.cold_starts} of {entry.invocations} invocations were "
                "cold; raise the pause"
            )
    return BenchReport(
        options=options,
        machine=machine,
        load_generator=generator,
        runs=runs,
        summary=RepeatSummary.of(runs),
        cold_starts=cold,
        warnings=warnings,
        elapsed_s=time.perf_counter() - started,
    )


def with_overrides(options: BenchOptions, **overrides: Any) -> BenchOptions:
    """``options`` with the overrides that are not ``None``."""
    return replace(options, **{key: value for key, value in overrides.items() if value is not None})


# ------------------------------------------------------------------------------------------- figure


def _sustainable(result: BackendResult) -> float | None:
    return result.search.sustainable_rps if result.search is not None else None


def plot_report(report: BenchReport, path: str | Path) -> Path:
    """A PNG: every run's latency CDFs at equal load, and each backend's throughput over the runs."""
    from strato.core.report import new_figure

    fig = new_figure(11.0, 4.2)
    cdf, bars = fig.subplots(1, 2, width_ratios=(3, 2))
    colours = {"lean": "tab:blue", "faasd": "tab:orange"}
    runs = report.runs
    for run in runs:
        for backend, result in run.backends.items():
            if result.latency is None or not len(result.latency.latencies_s):
                continue
            values = np.sort(result.latency.latencies_s) * 1e3
            fraction = np.arange(1, len(values) + 1) / len(values)
            first = run is runs[0]
            label = f"{backend} (p50 {result.latency.p50_s * 1e3:.2f} ms" + (
                f" in run 1 of {len(runs)})" if len(runs) > 1 else ")"
            )
            cdf.plot(
                values,
                fraction,
                label=label if first else None,
                color=colours.get(backend),
                alpha=1.0 if first else 0.45,
                linewidth=1.4 if first else 0.9,
            )
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log scale)")
    cdf.set_ylabel("fraction of requests")
    rates = sorted(run.rate_rps for run in runs)
    rate = f"{rates[0]:,.0f}" if rates[0] == rates[-1] else f"{rates[0]:,.0f}-{rates[-1]:,.0f}"
    runs_note = f", {len(runs)} runs" if len(runs) > 1 else ""
    cdf.set_title(f"latency at {rate} rps offered (open loop, Poisson{runs_note})")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(loc="lower right")

    names = list(BACKENDS)
    x = np.arange(len(names))
    source = report.load_generator

    def medians(values: list[list[float]]) -> tuple[list[float], npt.NDArray[np.float64]]:
        middle = [float(np.median(v)) for v in values]
        spread = np.array(
            [
                [m - min(v) for m, v in zip(middle, values, strict=True)],
                [max(v) - m for m, v in zip(middle, values, strict=True)],
            ]
        )
        return middle, spread

    closed, closed_err = medians(
        [[run.backends[name].max_throughput(source).achieved_rps for run in runs] for name in names]
    )
    has_search = all(_sustainable(run.backends[name]) is not None for run in runs for name in names)
    width = 0.38 if has_search else 0.6
    closed_bars = bars.bar(
        x - (width / 2 if has_search else 0),
        closed,
        width,
        yerr=closed_err if len(runs) > 1 else None,
        capsize=4,
        label=f"closed loop max ({_generator_name(source)})",
        color=[colours.get(name, "grey") for name in names],
    )
    bars.bar_label(closed_bars, fmt="{:,.0f}", fontsize=8)
    if has_search:
        sustained, sustained_err = medians(
            [[_sustainable(run.backends[name]) or 0.0 for run in runs] for name in names]
        )
        search_bars = bars.bar(
            x + width / 2,
            sustained,
            width,
            yerr=sustained_err if len(runs) > 1 else None,
            capsize=4,
            label="open loop, sustainable",
            color="lightgrey",
            edgecolor=[colours.get(name, "grey") for name in names],
        )
        bars.bar_label(search_bars, fmt="{:,.0f}", fontsize=8)
    bars.legend()
    bars.set_xticks(x, names)
    bars.set_ylabel("requests per second")
    median_note = " (median, min-max bars)" if len(runs) > 1 else ""
    bars.set_title(f"throughput, {report.options.connections} connections{median_note}")
    bars.grid(True, axis="y", alpha=0.3)
    out = Path(path)
    try:
        fig.savefig(out, dpi=120)
    except OSError as error:
        raise StratoError(f"cannot write the plot to {out}: {error.strerror or error}") from None
    return out
