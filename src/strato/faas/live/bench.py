"""The live platform's backends side by side: throughput, latency at equal load, and cold starts.

Junctiond (faasd on a kernel-bypass library OS) claims, against faasd, a median latency 37 % lower, a P99
63 % lower and 5x the throughput. Our analogue is the ``lean`` backend (gateway -> instance over a unix
socket) against the ``faasd`` backend (gateway -> provider -> watchdog -> function, each a real HTTP hop),
measured in one run, with the same load from a separate load-generator process
(:func:`~strato.faas.live.loadgen.run_in_subprocess`).

One run, in order:

1. For each backend: a server in its own temporary state directory (policy ``never-unload``, sandbox on),
   an echo function, a warm-up until the instance count stops changing, then the maximum throughput
   (closed loop, ``connections`` connections, ``duration_s``).
2. Optionally, per backend, a rate search: the highest open-loop rate whose achieved rate is >= 95 % of
   the offered one with a P99 under 100 ms (short probes, bisection).
3. For each backend: latency at the same offered rate ``R`` (open loop, Poisson arrivals, the same seed
   so both get the very same schedule). ``R`` defaults to half the lower of the two maximum throughputs,
   which is why every throughput is measured before any latency.
4. Cold starts of the lean backend with ``fixed:1ms`` keep-alive, so that every invocation after a short
   pause finds no instance: ``fresh`` spawn, ``fork`` spawn, and ``fork`` without the sandbox to show what
   isolation costs.

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
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from strato.errors import ConfigError, StratoError
from strato.faas.live.client import FaasClient
from strato.faas.live.loadgen import LoadResult, Target, run_in_subprocess
from strato.faas.live.serverproc import ServerProcess, running_server

BACKENDS: Final = ("lean", "faasd")
FUNCTION: Final = "echo"
ECHO_HANDLER: Final = "def handle(event):\n    return event.body\n"

MEDIAN_TARGET: Final = 0.63
"""Junctiond: median latency -37.33 % against faasd, so lean/faasd <= 0.63."""
P99_TARGET: Final = 0.37
"""Junctiond: P99 latency -63.42 % against faasd, so lean/faasd <= 0.37."""
THROUGHPUT_TARGET: Final = 5.0
"""Junctiond v1: 5x faasd's throughput."""
FORK_START_TARGET_S: Final = 0.010
"""Fork-server cold start: median spawn-to-handler-loaded time."""

SEARCH_MIN_ACHIEVED: Final = 0.95
SEARCH_MAX_P99_S: Final = 0.100
SEARCH_MAX_ERROR_SHARE: Final = 0.01
SEARCH_STEPS: Final = 6
# A probe that falls this far behind has failed anyway; a short timeout keeps its drain short.
SEARCH_TIMEOUT_S: Final = 1.0

COLD_MODES: Final = (("fresh", True), ("fork", True), ("fork", False))

Progress = Callable[[str], None]


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

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        """Short runs for smoke tests: 1 s measurements, 10 cold starts, no rate search."""
        settings: dict[str, Any] = {
            "duration_s": 1.0,
            "warmup_s": 0.5,
            "cold_starts": 10,
            "search": False,
            "search_probe_s": 0.5,
        }
        settings.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**settings)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _positive(what: str, value: float, unit: str = "seconds") -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{what} must be a positive number of {unit}, got {value}")


# ------------------------------------------------------------------------------------------- results


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _pct(values: npt.NDArray[np.float64] | list[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


@dataclass
class LoadPhase:
    """One load-generator run against one backend, as the report shows it (latencies in seconds)."""

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
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "latencies_s":
                continue  # tens of thousands of numbers: the percentiles say what a report needs
            out[key] = _num(value) if isinstance(value, float) else value
        out["status_counts"] = {str(status): count for status, count in sorted(self.status_counts.items())}
        return out


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
    search: RateSearch | None = None
    latency: LoadPhase | None = None
    server_warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "warmup": asdict(self.warmup),
            "throughput": self.throughput.to_json(),
            "search": self.search.to_json() if self.search else None,
            "latency": self.latency.to_json() if self.latency else None,
            "server_warnings": self.server_warnings,
        }


@dataclass
class Ratio:
    """lean / faasd for one metric, against Junctiond's claim."""

    metric: str
    lean: float
    faasd: float
    value: float | None
    target: float
    better: str
    """``"lower"``: the ratio must be <= target (latency); ``"higher"``: >= target (throughput)."""

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.target if self.better == "lower" else self.value >= self.target

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "lean": _num(self.lean),
            "faasd": _num(self.faasd),
            "value": self.value,
            "target": self.target,
            "comparison": "<=" if self.better == "lower" else ">=",
            "met": self.met,
        }


def _ratio(metric: str, lean: float, faasd: float, target: float, better: str) -> Ratio:
    value = lean / faasd if math.isfinite(lean) and math.isfinite(faasd) and faasd > 0 else None
    return Ratio(metric, lean, faasd, value, target, better)


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
    rate_rps: float
    rate_source: str
    backends: dict[str, BackendResult]
    ratios: dict[str, Ratio]
    cold_starts: list[ColdStarts]
    warnings: list[str]
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "strato-faas-bench/1",
            "options": self.options.to_json(),
            "machine": self.machine,
            "rate_rps": self.rate_rps,
            "rate_source": self.rate_source,
            "backends": {name: result.to_json() for name, result in self.backends.items()},
            "ratios": {name: ratio.to_json() for name, ratio in self.ratios.items()},
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
    def __init__(self, options: BenchOptions, progress: Progress | None) -> None:
        self.options = options
        self.progress = progress
        self.phase = 0
        self.total = self._count_phases()
        self.body = b"x" * options.body_bytes

    def _count_phases(self) -> int:
        per_backend = 3 + (1 if self.options.search else 0)  # start+warm-up, throughput, [search], latency
        return len(BACKENDS) * per_backend + (len(COLD_MODES) if self.options.cold_starts else 0)

    def say(self, text: str) -> None:
        self.phase += 1
        if self.progress is not None:
            self.progress(f"[{self.phase}/{self.total}] {text}")

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

    def measure(self, server: ServerProcess, run: Callable[[Target], LoadResult]) -> LoadPhase:
        client = server.client()
        try:
            _, before = _instances(client)
            result = run(self.target(server))
            _, after = _instances(client)
        finally:
            client.close()
        return LoadPhase.from_result(result, self.options.connections, after - before)

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


def run_bench(options: BenchOptions | None = None, *, progress: Progress | None = None) -> BenchReport:
    """Run the whole benchmark (see the module docstring); ``progress`` gets one line per phase."""
    options = options or BenchOptions()
    bench = _Bench(options, progress)
    started = time.perf_counter()
    warnings: list[str] = []
    machine = machine_info()
    machine["busy_share_before"] = busy = busy_share()
    if busy is not None and busy > 0.10:
        warnings.append(
            f"{busy:.0%} of the CPUs were busy with other work just before the run: "
            "expect noisy numbers, and rerun on a quiet machine"
        )
    results: dict[str, BackendResult] = {}
    with (
        tempfile.TemporaryDirectory(prefix="strato-bench-", ignore_cleanup_errors=True) as tmp,
        contextlib.ExitStack() as servers,
    ):
        root = Path(tmp)
        running: dict[str, ServerProcess] = {}
        for backend in BACKENDS:
            bench.say(f"{backend}: start the server, deploy {FUNCTION}, warm up")
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
            warmup = bench.warm_up(server)
            bench.say(
                f"{backend}: max throughput, closed loop, {options.connections} connections, "
                f"{options.duration_s:g} s"
            )
            results[backend] = BackendResult(backend, warmup, bench.throughput(server))
            if results[backend].throughput.completed == 0:
                raise StratoError(f"the {server.describe} completed no request in the throughput run")
            if options.search:
                ceiling = results[backend].throughput.achieved_rps
                bench.say(
                    f"{backend}: rate search, open loop, {SEARCH_STEPS} probes of "
                    f"{options.search_probe_s:g} s up to {1.1 * ceiling:,.0f} rps"
                )
                results[backend].search = bench.search(server, ceiling)

        lowest = min(results[backend].throughput.achieved_rps for backend in BACKENDS)
        if options.rate_rps is not None:
            rate, source = options.rate_rps, "option --rate"
        else:
            rate, source = 0.5 * lowest, "50 % of the lower max throughput"
        for backend in BACKENDS:
            search = results[backend].search
            if search is not None and (search.sustainable_rps or 0.0) < rate:
                warnings.append(
                    f"{backend} sustained at most {search.sustainable_rps or 0:,.0f} rps in the rate search, "
                    f"below the equal-load rate of {rate:,.0f} rps: its latencies include overload queueing"
                )
        for backend in BACKENDS:
            bench.say(f"{backend}: latency at {rate:,.0f} rps, open loop, Poisson, {options.duration_s:g} s")
            server = running[backend]
            results[backend].latency = bench.open_loop(
                server, rate, options.duration_s, warmup_s=options.warmup_s
            )
        for backend in BACKENDS:
            results[backend].server_warnings = running[backend].warnings()
        servers.close()

        cold: list[ColdStarts] = []
        if options.cold_starts:
            for spawn, sandbox in COLD_MODES:
                label = f"{spawn} spawn, sandbox {'on' if sandbox else 'off'}"
                bench.say(f"cold starts: lean, {label}, {options.cold_starts} invocations")
                cold.append(bench.cold(root / f"cold-{spawn}-{int(sandbox)}", spawn, sandbox))

    for backend, result in results.items():
        if not result.warmup.stable:
            warnings.append(
                f"{backend}: the instance count was still changing after "
                f"{result.warmup.rounds} warm-up rounds"
            )
    for phase_name in ("throughput", "latency"):
        for backend, result in results.items():
            phase: LoadPhase | None = getattr(result, phase_name)
            if phase is not None and phase.instances_started:
                warnings.append(
                    f"{backend}: {phase.instances_started} instance(s) started during the {phase_name} run"
                )
    for entry in cold:
        if entry.cold_starts != entry.invocations:
            warnings.append(
                f"cold starts ({entry.label}): {entry.cold_starts} of {entry.invocations} invocations were "
                "cold; raise the pause"
            )

    lean, faasd = results["lean"], results["faasd"]
    assert lean.latency is not None and faasd.latency is not None
    ratios = {
        "median_latency": _ratio(
            "median latency", lean.latency.p50_s, faasd.latency.p50_s, MEDIAN_TARGET, "lower"
        ),
        "p99_latency": _ratio("p99 latency", lean.latency.p99_s, faasd.latency.p99_s, P99_TARGET, "lower"),
        "throughput": _ratio(
            "throughput",
            lean.throughput.achieved_rps,
            faasd.throughput.achieved_rps,
            THROUGHPUT_TARGET,
            "higher",
        ),
    }
    return BenchReport(
        options=options,
        machine=machine,
        rate_rps=rate,
        rate_source=source,
        backends=results,
        ratios=ratios,
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
    """A PNG: latency CDFs of both backends at the equal load, and the throughput of each."""
    from strato.core.report import new_figure

    fig = new_figure(11.0, 4.2)
    cdf, bars = fig.subplots(1, 2, width_ratios=(3, 2))
    colours = {"lean": "tab:blue", "faasd": "tab:orange"}
    for backend, result in report.backends.items():
        if result.latency is None or not len(result.latency.latencies_s):
            continue
        values = np.sort(result.latency.latencies_s) * 1e3
        fraction = np.arange(1, len(values) + 1) / len(values)
        cdf.plot(
            values,
            fraction,
            label=f"{backend} (p50 {result.latency.p50_s * 1e3:.2f} ms)",
            color=colours.get(backend),
        )
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log scale)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title(f"latency at {report.rate_rps:,.0f} rps offered (open loop, Poisson)")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(loc="lower right")

    names = list(report.backends)
    x = np.arange(len(names))
    closed = [report.backends[name].throughput.achieved_rps for name in names]
    has_search = all(report.backends[name].search is not None for name in names)
    width = 0.38 if has_search else 0.6
    closed_bars = bars.bar(
        x - (width / 2 if has_search else 0),
        closed,
        width,
        label="closed loop max",
        color=[colours.get(name, "grey") for name in names],
    )
    bars.bar_label(closed_bars, fmt="{:,.0f}", fontsize=8)
    if has_search:
        sustained = [_sustainable(report.backends[name]) or 0.0 for name in names]
        search_bars = bars.bar(
            x + width / 2,
            sustained,
            width,
            label="open loop, sustainable",
            color="lightgrey",
            edgecolor=[colours.get(name, "grey") for name in names],
        )
        bars.bar_label(search_bars, fmt="{:,.0f}", fontsize=8)
        bars.legend()
    bars.set_xticks(x, names)
    bars.set_ylabel("requests per second")
    bars.set_title(f"throughput ({report.options.connections} connections)")
    bars.grid(True, axis="y", alpha=0.3)
    out = Path(path)
    try:
        fig.savefig(out, dpi=120)
    except OSError as error:
        raise StratoError(f"cannot write the plot to {out}: {error.strerror or error}") from None
    return out
