"""Replay a trace against the live platform, time-compressed, and set it beside the simulator's prediction.

Every duration scales by the same factor ``speedup``: gaps between arrivals, execution times (each
synthetic handler sleeps for its invocation's duration / speedup) and the policy's windows (the server
runs with ``--time-scale speedup``). The replay is therefore the trace in miniature, and the live
cold-start counts and wasted memory should match what the simulator predicts for the same invocations
(the same seed expands minute counts and durations identically for both).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from strato.errors import ConfigError
from strato.faas.live.client import FaasClient
from strato.faas.live.loadgen import LoadResult, ScheduledRequest, Target, run_schedule
from strato.faas.live.serverproc import ServerProcess, running_server
from strato.faas.policies import parse_policy
from strato.faas.results import PolicyResult
from strato.faas.simulator import simulate
from strato.traces.model import Invocations, Workload

SYNTHETIC_HANDLER = '''\
"""A synthetic function of a replayed trace: holds some memory, sleeps for the invocation's duration."""
import os
import time

SPEEDUP = float(os.environ["STRATO_REPLAY_SPEEDUP"])
FOOTPRINT = bytearray(int(float(os.environ.get("STRATO_REPLAY_FOOTPRINT_MB", "0")) * 1048576))


def handle(event):
    time.sleep(int(event.body) / 1e6 / SPEEDUP)
    return b""
'''
MIN_LIMIT_MB = 64.0
"""Smallest memory limit given to a synthetic function: some apps average 3 MiB, less than an interpreter
needs. Wasted memory is still counted with each app's own size from the trace."""
START_LEAD_S = 1.0
"""Real seconds between starting the load generator and the trace's time zero, so it has set up."""


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

    def __post_init__(self) -> None:
        if not self.speedup > 0:
            raise ConfigError("--speedup must be positive")
        if self.hours is not None and not self.hours > 0:
            raise ConfigError("--hours must be positive")
        if self.apps is not None and self.apps < 1:
            raise ConfigError("--apps must be at least 1")
        if not 0 <= self.footprint_fraction <= 1:
            raise ConfigError("--footprint must be between 0 and 1")


@dataclass
class ReplayReport:
    options: ReplayOptions
    workload: str
    invocations: int
    apps: int
    horizon_s: float
    simulated: PolicyResult
    live: PolicyResult
    live_errors: dict[int, int]
    load: dict[str, Any]
    wall_s: float
    server_stats: dict[str, Any]
    """The server's own per-function counters at the end of the trace period."""

    def rows(self) -> list[dict[str, Any]]:
        def row(metric: str, sim: float, live: float) -> dict[str, Any]:
            gap = 100.0 * (live - sim) / sim if sim else (0.0 if live == sim else float("inf"))
            return {"metric": metric, "simulator": sim, "live": live, "gap_pct": gap}

        sim, live = self.simulated, self.live
        return [
            row("invocations", sim.invocations, live.invocations),
            row("cold starts", sim.cold_starts, live.cold_starts),
            row(
                "cold-start %",
                100 * sim.cold_starts / max(sim.invocations, 1),
                100 * live.cold_starts / max(live.invocations, 1),
            ),
            row("p75-app cold-start %", sim.cold_start_pct_p75_app, live.cold_start_pct_p75_app),
            row("wasted memory GiB-s", sim.wasted_memory_gb_s, live.wasted_memory_gb_s),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "options": self.options.__dict__,
            "workload": self.workload,
            "invocations": self.invocations,
            "apps": self.apps,
            "horizon_s": self.horizon_s,
            "wall_s": self.wall_s,
            "comparison": self.rows(),
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
    return Invocations(
        app=invocations.app[keep],
        function=invocations.function[keep],
        arrival_us=invocations.arrival_us[keep],
        duration_us=invocations.duration_us[keep],
        n_apps=n_apps,
        horizon_us=horizon,
    )


def replay(
    workload: Workload, options: ReplayOptions, progress: Callable[[str], None] | None = None
) -> ReplayReport:
    """Run the simulator and the live platform on the same invocations; return both results."""
    say = progress or (lambda message: None)
    parse_policy(options.policy)  # a bad spec fails before anything starts
    invocations = select(workload.expand(seed=options.seed), hours=options.hours, apps=options.apps)
    if len(invocations) == 0:
        raise ConfigError("the selected part of the trace has no invocations")
    memory = np.asarray(workload.app_memory_mb[: invocations.n_apps], dtype=np.float64)
    say(f"simulating {options.policy} on {len(invocations):,} invocations of {invocations.n_apps} apps")
    simulated = simulate(invocations, memory, [parse_policy(options.policy)], show_progress=False)[0]
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
                    env={
                        "STRATO_REPLAY_SPEEDUP": f"{options.speedup:g}",
                        "STRATO_REPLAY_FOOTPRINT_MB": f"{mb * options.footprint_fraction:g}",
                    },
                    concurrency=options.instance_concurrency,
                    maxConcurrency=10_000,
                )
            load, stats = _drive(server.url, client, invocations, options, horizon_real_s, say)
    live = _live_result(stats, invocations, memory, options)
    errors = {status: count for status, count in load.status_counts.items() if status != 200}
    return ReplayReport(
        options=options,
        workload=workload.name,
        invocations=len(invocations),
        apps=int(np.unique(invocations.app).size),
        horizon_s=invocations.horizon_us / 1e6,
        simulated=simulated,
        live=live,
        live_errors=errors,
        load=load.summary(),
        wall_s=time.monotonic() - started,
        server_stats=stats,
    )


def _drive(
    url: str,
    client: FaasClient,
    invocations: Invocations,
    options: ReplayOptions,
    horizon_real_s: float,
    say: Callable[[str], None],
) -> tuple[LoadResult, dict[str, Any]]:
    order = np.argsort(invocations.arrival_us, kind="stable")
    offsets = START_LEAD_S + invocations.arrival_us[order] / 1e6 / options.speedup
    paths = [f"/function/app-{app}" for app in range(invocations.n_apps)]
    schedule: list[ScheduledRequest] = [
        (offset, paths[app], b"%d" % duration, ())
        for offset, app, duration in zip(
            offsets.tolist(),
            invocations.app[order].tolist(),
            invocations.duration_us[order].tolist(),
            strict=True,
        )
    ]
    target = Target.from_url(url + "/")
    outcome: dict[str, Any] = {}
    origin_known = threading.Event()
    origin: list[float] = []

    def started(t0: float) -> None:
        origin.append(t0)
        origin_known.set()

    def run() -> None:
        try:
            outcome["load"] = run_schedule(
                target, schedule, max_connections=512, timeout_s=600.0, on_start=started
            )
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error
        finally:
            origin_known.set()

    driver = threading.Thread(target=run, daemon=True)
    driver.start()
    origin_known.wait()
    if origin:
        # Statistics read when the trace's period ends in the generator's own clock cover exactly it.
        end = origin[0] + START_LEAD_S + horizon_real_s
        time.sleep(max(end - time.perf_counter(), 0.0))
        stats = client.stats()
    say("trace period over; waiting for the last executions")
    driver.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["load"], stats


def _live_result(
    stats: dict[str, Any], invocations: Invocations, memory: np.ndarray, options: ReplayOptions
) -> PolicyResult:
    n = invocations.n_apps
    counts = np.zeros(n, dtype=np.int64)
    cold = np.zeros(n, dtype=np.int64)
    wasted_us = np.zeros(n, dtype=np.int64)
    for name, row in stats["functions"].items():
        app = int(name.removeprefix("app-"))
        counts[app] = row["invocations"]
        cold[app] = row["cold_starts"]
        # The server reports MiB x policy-seconds; the simulator's unit is time per app (times its memory).
        wasted_us[app] = round(row["wasted_mb_s"] / max(row["memory_mb"], 1e-9) * 1e6)
    return PolicyResult(
        policy=f"{options.policy} (live)",
        app_invocations=counts,
        app_cold_starts=cold,
        app_wasted_us=wasted_us,
        app_memory_mb=memory,
    )
