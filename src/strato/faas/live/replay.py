"""Replay a trace against the live platform, time-compressed, and set it beside the simulator's prediction.

Every duration scales by the same factor ``speedup``: gaps between arrivals, execution times and the
policy's windows (the server runs with ``--time-scale speedup``). The replay is therefore the trace in
miniature, and the live cold starts and wasted memory should match what the simulator computes for the
same invocations (the same seed expands minute counts and durations identically for both).

``repeat`` and ``warmup_s`` mean what they mean for ``strato faas simulate``
(:mod:`strato.faas.keepalive`): the trace is sent ``repeat`` times back to back, and the node's counters
read at the warm-up's end are subtracted from those read at the period's end, which is exactly the
simulator's "full run less its warm-up prefix".

A busy host and an honest comparison
------------------------------------
A live replay shares the CPUs with whatever else runs. The figures here come from
``strato faas replay --trace azure-functions-2019:raw-format-100-8h --hours 1 --speedup 120 --policy
fixed:10m`` (``--hours 0.5 --speedup 60`` where said), with two ``python -c 'while True: pass'`` beside it
where said; the first ones at f050cd1, before the rules below. On this project's 2-core machine busy with
other work, fixed 10 min on the first hour of raw-format-100-8h at 120x lost 4.5 % of
the simulator's wasted memory (5.2 % beside two busy loops, 14.5 % once under a load of 4-7). Requests
left the load generator 0.6 ms late on average, but responses came 31 ms after their executions' planned
end on average (230 ms at p99): a CPU-starved handler wakes late from its sleep, instances boot slowly,
every hop queues. At 120x each such millisecond is 0.12 s of busy time the trace does not have, taken from
the idle time after it. The simulator run on the requests' real send and response times bracketed the live
figure (14,401 < 14,866 < 15,570 GiB-s planned): the node's accounting was right about what it saw; the
workload it saw was not the trace. Late keep-alive timers would have raised the live figure, not lowered
it, and policy time is rounded to the microsecond only. Hence three rules:

* a synthetic handler runs until its invocation's *planned* end (the replay's origin plus arrival plus
  duration, on the host's monotonic clock, sent as the request body), not for a duration counted from
  whenever it happened to start: a late send, a boot or a queue in front of it does not move its end, as
  the simulator does not model load time;
* the load generator records when each request really left, and the simulator the live run is compared
  with (``realised``) runs on those arrivals, up to the instants at which the node really computed the
  counters compared (the warm-up's end and the period's end, from the node's own clock);
* how late an execution really ended at the node is not observable here: between its planned end and
  the moment its response reached the generator. The simulator runs on both bounds; if they disagree on
  cold starts (by more than one) or wasted memory by more than ``max_uncertainty``, the replay fell too
  far behind to mean anything and :class:`ReplayFellBehind` says so, with the lags, instead of a gap
  that is only the load.
  With two busy loops beside it and the machine's other work on top (load 7-8), the platform could not
  serve the 1,260 requests/s of that hour at 120x (requests queued 360 ms for a connection at p99;
  uncertainty 16-18 %: refused), while the half hour at 60x followed within 2.3 %; with the two busy
  loops alone, 120x followed within 1.6 % (live -0.95 %). A lower speedup is the remedy.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError, StratoError, UnavailableError
from strato.faas.keepalive import (
    check_warmup,
    invocations_before,
    repeat_invocations,
    simulate_after_warmup,
)
from strato.faas.live.client import FaasClient
from strato.faas.live.loadgen import LoadResult, ScheduledRequest, Target, run_schedule
from strato.faas.live.serverproc import ServerProcess, running_server
from strato.faas.policies import parse_policy
from strato.faas.results import PolicyResult
from strato.traces.faas.model import Invocations, Workload

SYNTHETIC_HANDLER = '''\
"""A synthetic function of a replayed trace: holds some memory, runs until its invocation's planned end."""
import os
import time

FOOTPRINT = bytearray(int(float(os.environ.get("STRATO_REPLAY_FOOTPRINT_MB", "0")) * 1048576))


def handle(event):
    # The body is the planned end on the host's monotonic clock (perf_counter), the same in every process.
    time.sleep(max(float(event.body) - time.perf_counter(), 0.0))
    return b""
'''
MIN_LIMIT_MB = 64.0
"""Smallest memory limit given to a synthetic function: some apps average 3 MiB, less than an interpreter
needs. Wasted memory is still counted with each app's own size from the trace."""
START_LEAD_S = 1.0
"""Real seconds between starting the load generator and the trace's time zero, so it has set up."""
CLOCK_SLACK_S = 1e-3
"""A response may not reach the generator before its execution's planned end; one that does by more than
this (a millisecond, far above the body's microsecond rounding) means the instances read another clock."""


class ReplayFellBehind(UnavailableError):
    """The host was too busy for the live replay to follow its trace closely enough to compare."""


@dataclass(frozen=True)
class ReplayOptions:
    trace: str
    policy: str = "fixed:10m"
    speedup: float = 60.0
    hours: float | None = None
    apps: int | None = None
    backend: str = "lean"
    spawn: str = "fork"
    seed: int = 0
    footprint_fraction: float = 0.02
    """Share of each app's memory its synthetic handler really allocates (the limit is the full size)."""
    instance_concurrency: int = 64
    sandbox: bool = True
    repeat: int = 1
    """Send the (selected) trace this many times back to back."""
    warmup_s: float = 0.0
    """Trace seconds at the start of the repeated trace that policies learn from but no metric counts."""
    max_uncertainty: float = 0.05
    """Largest relative disagreement between the two bounds of the realised workload (see the module
    docstring) at which a comparison still means something."""

    def __post_init__(self) -> None:
        if not self.speedup > 0:
            raise ConfigError("--speedup must be positive")
        if self.hours is not None and not self.hours > 0:
            raise ConfigError("--hours must be positive")
        if self.apps is not None and self.apps < 1:
            raise ConfigError("--apps must be at least 1")
        if not 0 <= self.footprint_fraction <= 1:
            raise ConfigError("--footprint must be between 0 and 1")
        if self.repeat < 1:
            raise ConfigError(f"--repeat must be at least 1, got {self.repeat}")
        if not (self.warmup_s >= 0 and math.isfinite(self.warmup_s)):
            raise ConfigError(f"--warmup must be a duration of 0 or more, got {self.warmup_s}")
        if not self.max_uncertainty > 0:
            raise ConfigError("the largest uncertainty must be positive")


@dataclass(frozen=True)
class Realisation:
    """How closely the live run followed its trace. Times are policy seconds (real seconds x speedup)."""

    send_lag_p50_s: float
    send_lag_p99_s: float
    send_lag_max_s: float
    """How late requests left the load generator."""
    end_lag_p50_s: float
    end_lag_p99_s: float
    end_lag_max_s: float
    """How long after its execution's planned end each response reached the load generator: a bound on
    how late the execution ended at the node."""
    counters_late_s: float
    """How long after the period's planned end the node computed the counters compared."""
    uncertainty: float
    """The larger relative change of cold starts and wasted memory when the simulator's executions end as
    the responses arrived rather than as planned (a change by a single cold start counts as none)."""

    def to_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ReplayRow:
    metric: str
    planned: float
    """The simulator on the trace as planned."""
    simulator: float
    """The simulator on the trace as the live run realised it: the one the live figure is compared with."""
    live: float

    @property
    def gap_pct(self) -> float:
        sim, live = self.simulator, self.live
        return 100.0 * (live - sim) / sim if sim else (0.0 if live == sim else math.inf)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "gap_pct": self.gap_pct}


@dataclass(frozen=True)
class ReplayReport:
    options: ReplayOptions
    workload: str
    invocations: int
    """Invocations sent (all repeats, warm-up included)."""
    apps: int
    horizon_s: float
    """Trace seconds replayed (all repeats)."""
    measured_s: float
    """Trace seconds counted: the horizon less the warm-up."""
    simulated: PolicyResult
    """The simulator on the trace as planned."""
    realised: PolicyResult
    """The simulator on the arrivals as sent and the counters' real instants (see the module docstring)."""
    live: PolicyResult
    realisation: Realisation
    live_errors: dict[int, int]
    load: dict[str, float | int | None]
    wall_s: float
    server_stats: dict[str, Any]
    """The server's own per-function counters at the end of the trace period."""

    def rows(self) -> list[ReplayRow]:
        plan, sim, live = self.simulated, self.realised, self.live

        def pct(result: PolicyResult) -> float:
            return 100 * result.cold_starts / max(result.invocations, 1)

        return [
            ReplayRow("invocations", plan.invocations, sim.invocations, live.invocations),
            ReplayRow("cold starts", plan.cold_starts, sim.cold_starts, live.cold_starts),
            ReplayRow("cold-start %", pct(plan), pct(sim), pct(live)),
            ReplayRow(
                "p75-app cold-start %",
                plan.cold_start_pct_p75_app,
                sim.cold_start_pct_p75_app,
                live.cold_start_pct_p75_app,
            ),
            ReplayRow(
                "wasted memory GiB-s",
                plan.wasted_memory_gb_s,
                sim.wasted_memory_gb_s,
                live.wasted_memory_gb_s,
            ),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "options": asdict(self.options),
            "workload": self.workload,
            "invocations": self.invocations,
            "apps": self.apps,
            "horizon_s": self.horizon_s,
            "measured_s": self.measured_s,
            "wall_s": self.wall_s,
            "comparison": [row.to_json() for row in self.rows()],
            "realisation": self.realisation.to_json(),
            "live_errors": {str(k): v for k, v in self.live_errors.items()},
            "load": self.load,
        }


def select(invocations: Invocations, *, hours: float | None, apps: int | None) -> Invocations:
    """The invocations of the first ``apps`` apps (by id order) before ``hours``."""
    keep = np.ones(len(invocations), dtype=bool)
    horizon = invocations.horizon_us
    if hours is not None:
        horizon = min(horizon, round(hours * 3600e6))
        keep &= invocations.arrival_us < horizon
    n_apps = invocations.n_apps if apps is None else min(apps, invocations.n_apps)
    keep &= invocations.app < n_apps
    return invocations.subset(keep, horizon_us=horizon, n_apps=n_apps)


@dataclass(frozen=True)
class _Counters:
    """The node's ``/system/stats`` and the instant (perf_counter) at which the node computed them."""

    stats: dict[str, Any]
    at: float


@dataclass(frozen=True)
class _LiveRun:
    load: LoadResult
    order: NDArray[np.intp]
    """Schedule position -> invocation: the per-request results are in schedule (arrival) order."""
    origin: float
    """The perf_counter value the trace's time zero stood for."""
    at_warmup: _Counters | None
    at_end: _Counters


def replay(
    workload: Workload, options: ReplayOptions, progress: Callable[[str], None] | None = None
) -> ReplayReport:
    """Run the simulator and the live platform on the same invocations; return both results."""
    say = progress or (lambda message: None)
    policy = parse_policy(options.policy)  # a bad spec fails before anything starts
    selected = select(workload.expand(seed=options.seed), hours=options.hours, apps=options.apps)
    if len(selected) == 0:
        raise ConfigError("the selected part of the trace has no invocations")
    invocations = repeat_invocations(selected, options.repeat)
    warmup_us = round(options.warmup_s * 1e6)
    check_warmup(warmup_us, invocations.horizon_us)
    memory = np.asarray(workload.app_memory_mb[: invocations.n_apps], dtype=np.float64)
    say(f"simulating {options.policy} on {len(invocations):,} invocations of {invocations.n_apps} apps")
    simulated = simulate_after_warmup(
        invocations, memory, [policy], warmup_us=warmup_us, show_progress=False
    )[0]
    horizon_real_s = invocations.horizon_us / 1e6 / options.speedup
    say(
        f"live: {invocations.horizon_us / 3.6e9:.2f} h of trace in {horizon_real_s:.0f} s "
        f"(speedup {options.speedup:g}, backend {options.backend}, policy {options.policy})"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="strato-replay-") as scratch:
        code_dir = Path(scratch) / "code"
        code_dir.mkdir()
        (code_dir / "handler.py").write_text(SYNTHETIC_HANDLER)
        extra = ["--time-scale", f"{options.speedup:g}", "--max-body", "1KiB"]
        server = ServerProcess.for_backend(
            Path(scratch),
            backend=options.backend,
            spawn=options.spawn,
            policy=options.policy,
            sandbox=options.sandbox,
            extra=extra,
        )
        with running_server(server):
            client = server.client()
            invoked_apps = np.unique(invocations.app)
            say(f"deploying {invoked_apps.size} synthetic functions")
            for app in invoked_apps.tolist():
                mb = float(memory[app])
                client.deploy(
                    f"app-{app}",
                    directory=code_dir,
                    memory=f"{max(mb, MIN_LIMIT_MB):g}Mi",
                    timeout="1h",
                    env={"STRATO_REPLAY_FOOTPRINT_MB": f"{mb * options.footprint_fraction:g}"},
                    concurrency=options.instance_concurrency,
                    maxConcurrency=10_000,
                )
            run = _drive(server.url, client, invocations, options, warmup_us, say)
    realised, realisation = _realised(run, invocations, memory, options)
    if realisation.uncertainty > options.max_uncertainty:
        raise ReplayFellBehind(_behind_message(realisation, options))
    live = _live_result(run.at_end.stats, invocations.n_apps, memory, options.policy)
    if run.at_warmup is not None:
        live = live.after(_live_result(run.at_warmup.stats, invocations.n_apps, memory, options.policy))
    errors = {status: count for status, count in run.load.status_counts.items() if status != 200}
    return ReplayReport(
        options=options,
        workload=workload.name,
        invocations=len(invocations),
        apps=int(invoked_apps.size),
        horizon_s=invocations.horizon_us / 1e6,
        measured_s=(invocations.horizon_us - warmup_us) / 1e6,
        simulated=simulated,
        realised=realised,
        live=live,
        realisation=realisation,
        live_errors=errors,
        load=run.load.summary(),
        wall_s=time.monotonic() - started,
        server_stats=run.at_end.stats,
    )


def _node_origin(client: FaasClient, tries: int = 5) -> float:
    """The perf_counter value at which the node's ``uptime_s`` was zero.

    Both processes read the host's monotonic clock, so the node's uptime at any stats reply places that
    reply on the replay's clock. The round trip bounds the estimate; the shortest of a few is kept.
    """
    best_rtt, origin = math.inf, 0.0
    for _ in range(tries):
        before = time.perf_counter()
        uptime = float(client.stats()["uptime_s"])
        after = time.perf_counter()
        if after - before < best_rtt:
            best_rtt, origin = after - before, (before + after) / 2 - uptime
    return origin


def _drive(
    url: str,
    client: FaasClient,
    invocations: Invocations,
    options: ReplayOptions,
    warmup_us: int,
    say: Callable[[str], None],
) -> _LiveRun:
    node_origin = _node_origin(client)
    order = np.argsort(invocations.arrival_us, kind="stable")
    arrival_s = invocations.arrival_us[order] / 1e6 / options.speedup
    end_s = (invocations.arrival_us[order] + invocations.duration_us[order]) / 1e6 / options.speedup
    paths = [f"/function/app-{app}" for app in range(invocations.n_apps)]
    origin = time.perf_counter() + START_LEAD_S
    schedule: list[ScheduledRequest] = [
        (offset, paths[app], b"%.6f" % (origin + end), ())
        for offset, app, end in zip(
            arrival_s.tolist(), invocations.app[order].tolist(), end_s.tolist(), strict=True
        )
    ]
    target = Target.from_url(url + "/")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["load"] = run_schedule(
                target, schedule, max_connections=512, timeout_s=600.0, keep_per_request=True, origin=origin
            )
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    def counters_at(trace_us: int) -> _Counters:
        time.sleep(max(origin + trace_us / 1e6 / options.speedup - time.perf_counter(), 0.0))
        stats = client.stats()
        return _Counters(stats, node_origin + float(stats["uptime_s"]))

    driver = threading.Thread(target=run, daemon=True)
    driver.start()
    at_warmup = counters_at(warmup_us) if warmup_us > 0 else None
    at_end = counters_at(invocations.horizon_us)
    say("trace period over; waiting for the last executions")
    driver.join()
    if "error" in outcome:
        raise outcome["error"]
    return _LiveRun(outcome["load"], order, origin, at_warmup, at_end)


def _realised(
    run: _LiveRun, invocations: Invocations, memory: NDArray[np.float64], options: ReplayOptions
) -> tuple[PolicyResult, Realisation]:
    """The simulator on the workload as sent, and how far that was from the plan (module docstring)."""
    per_request = run.load.per_request
    assert per_request is not None
    scale = options.speedup * 1e6  # real seconds -> trace µs
    order = run.order
    app = invocations.app[order]
    function = invocations.function[order]
    arrival = invocations.arrival_us[order]
    end = arrival + invocations.duration_us[order]
    # Latencies count from the intended send time, service times from the moment the request was written.
    finished = arrival / scale + per_request.latency_s
    answered = per_request.status > 0
    sent_s = finished - per_request.service_s
    reached = np.isfinite(sent_s)
    sent = np.where(reached, np.round(np.nan_to_num(sent_s) * scale), 0).astype(np.int64)
    response = np.where(answered, np.round(np.nan_to_num(finished) * scale), end).astype(np.int64)
    end_lag = (response - end)[answered]
    if end_lag.size and end_lag.min() < -CLOCK_SLACK_S * scale:
        raise StratoError(
            "responses arrived before their executions' planned end: the instances do not read the "
            "host's monotonic clock (a time namespace?), so the replay cannot pace them"
        )
    horizon = round((run.at_end.at - run.origin) * scale)
    warmup = 0 if run.at_warmup is None else round((run.at_warmup.at - run.origin) * scale)

    policy = parse_policy(options.policy)
    by_app = np.lexsort((sent[reached], app[reached]))
    sent_by_app = sent[reached][by_app]

    def simulate_until(ends: NDArray[np.int64]) -> PolicyResult:
        replayed = Invocations(
            app=app[reached][by_app],
            function=function[reached][by_app],
            arrival_us=sent_by_app,
            duration_us=np.maximum(ends[reached][by_app] - sent_by_app, 0),
            n_apps=invocations.n_apps,
            horizon_us=invocations.horizon_us,
        )
        return simulate_after_warmup(
            invocations_before(replayed, horizon), memory, [policy], warmup_us=warmup, show_progress=False
        )[0]

    realised = simulate_until(end)
    bound = simulate_until(np.maximum(response, end))
    send_lag = (sent - arrival)[reached] / 1e6
    return realised, Realisation(
        send_lag_p50_s=_percentile(send_lag, 50),
        send_lag_p99_s=_percentile(send_lag, 99),
        send_lag_max_s=_percentile(send_lag, 100),
        end_lag_p50_s=_percentile(end_lag / 1e6, 50),
        end_lag_p99_s=_percentile(end_lag / 1e6, 99),
        end_lag_max_s=_percentile(end_lag / 1e6, 100),
        counters_late_s=(horizon - invocations.horizon_us) / 1e6,
        uncertainty=max(
            # One cold start more or less is a count's resolution, not a sign of falling behind.
            0.0
            if abs(bound.cold_starts - realised.cold_starts) <= 1
            else _relative_change(realised.cold_starts, bound.cold_starts),
            _relative_change(realised.wasted_memory_gb_s, bound.wasted_memory_gb_s),
        ),
    )


def _behind_message(realisation: Realisation, options: ReplayOptions) -> str:
    real_ms = 1e3 / options.speedup
    return (
        "the live replay fell too far behind its trace to compare with the simulator: responses reached "
        f"the load generator {realisation.end_lag_p50_s * real_ms:.1f} ms (p99 "
        f"{realisation.end_lag_p99_s * real_ms:.1f} ms) of real time after their executions' planned end "
        f"and requests left {realisation.send_lag_p99_s * real_ms:.1f} ms late at p99, which leaves the "
        f"simulator's cold starts or wasted memory uncertain by {realisation.uncertainty:.1%} (at most "
        f"{options.max_uncertainty:.0%} means something); replay at a lower --speedup than "
        f"{options.speedup:g} or on a less busy machine"
    )


def _percentile(values: NDArray[np.float64], q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0


def _relative_change(base: float, other: float) -> float:
    if base == 0:
        return 0.0 if other == 0 else math.inf
    return abs(other - base) / base


def _live_result(
    stats: dict[str, Any], n_apps: int, memory: NDArray[np.float64], policy: str
) -> PolicyResult:
    counts = np.zeros(n_apps, dtype=np.int64)
    cold = np.zeros(n_apps, dtype=np.int64)
    wasted_us = np.zeros(n_apps, dtype=np.int64)
    for name, row in stats["functions"].items():
        app = int(name.removeprefix("app-"))
        counts[app] = row["invocations"]
        cold[app] = row["cold_starts"]
        # The server reports MiB x policy-seconds; the simulator's unit is time per app (times its memory).
        wasted_us[app] = round(row["wasted_mb_s"] / max(row["memory_mb"], 1e-9) * 1e6)
    return PolicyResult(
        policy=f"{policy} (live)",
        app_invocations=counts,
        app_cold_starts=cold,
        app_wasted_us=wasted_us,
        app_memory_mb=memory,
    )
