"""POLCA row simulation speed: the power model's overhead on the engine, and a sweep on a process pool.

    .venv/bin/python benchmarks/power_bench.py            # the full runs (about a quarter of an hour)
    .venv/bin/python benchmarks/power_bench.py --quick    # minutes of row time: a smoke run

(a) One day of a 52-server DGX-A100 row serving Llama2-70B under the budget of 40 servers (their rated
power), controller ``polca``, ``strato power simulate``'s default workload (synthetic coding-sized
requests, 0.9 req/s per server at the day's peak, the diurnal shape). The baseline in the same run is the
engine alone on the same requests: each priority class's cluster simulated without the phase log, the
power meter or a controller. The ratio is the power model's overhead; issue 13's bar is a day in under
5 minutes on this 2-core machine.

(b) A small ``strato power sweep``: 0, 6 and 12 servers added under the same budget, ``polca`` and
``capping`` beside the ``none`` reference, over a 2-hour window around the peak (14:00-16:00), run one
after the other and then on a process pool of ``--workers``; both must give the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from strato.core.console import print_table
from strato.llm.engine import ClusterSimulator
from strato.power.controllers import parse_controller
from strato.power.row import CLASSES, RowSimulator, RowSpec, RowWorkload
from strato.power.sweep import parse_added, sweep
from strato.traces.llm import load_requests

PEAK_RPS_PER_SERVER = 0.9
PEAK_WINDOW_START_S = 14 * 3600.0
BAR_S = 300.0


def day(workload: RowWorkload) -> list[dict[str, object]]:
    """The row under polca and the engine alone on the same requests, timed."""
    spec = RowSpec(servers=52, budget_servers=40)
    simulator = RowSimulator(spec, workload, parse_controller("polca"))
    started = time.perf_counter()
    run = simulator.run()
    row_s = time.perf_counter() - started
    requests = sum(latency.requests for latency in run.latency.values())
    completed = sum(latency.completed for latency in run.latency.values())
    # The same designs, perf model and requests as the row (workload.requests is seeded per class).
    started = time.perf_counter()
    alone = 0
    for name, design in simulator.designs:
        engine = ClusterSimulator(
            design, simulator.llm, {simulator.machine.name: simulator.perf}, simulator.config
        )
        times = engine.run(workload.requests(design.machines, CLASSES.index(name)))
        alone += int(times.arrival_s.size)
    engine_s = time.perf_counter() - started
    if alone != requests:
        raise SystemExit(f"the engine alone saw {alone} requests, the row {requests}: not the same run")
    return [
        {
            "run": f"row, polca, {span(workload.duration_s)}",
            "requests": requests,
            "wall_s": row_s,
            "requests_per_s": requests / row_s,
            "ratio": row_s / engine_s,
            "note": f"{completed:,} completed, {len(run.actions)} actions, {run.brake_events} brakes",
        },
        {
            "run": "engine alone, same requests",
            "requests": alone,
            "wall_s": engine_s,
            "requests_per_s": alone / engine_s,
            "ratio": 1.0,
            "note": "baseline",
        },
    ]


def _without_timings(value: object) -> object:
    """A sweep's JSON less each run's own wall time, the one thing two identical sweeps differ in."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in sorted(value.items()) if k != "simulation_s"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def span(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def sweeps(workload: RowWorkload, added: str, workers: int) -> list[dict[str, object]]:
    """The same sweep serial and on a pool, timed; their rows must agree."""
    spec = RowSpec(budget_servers=40)
    points = parse_added(added)
    controllers = ["polca", "capping"]
    runs = len(points) * (1 + len(controllers))
    timed = []
    for count in (1, workers):
        started = time.perf_counter()
        result = sweep(spec, workload, controllers, points, workers=count, show_progress=False)
        timed.append((time.perf_counter() - started, json.dumps(_without_timings(result.to_json()))))
    (serial_s, serial), (pool_s, pooled) = timed
    same = "same rows" if serial == pooled else "ROWS DIFFER"
    label = f"sweep --added {added}, {len(controllers)} controllers + none"
    return [
        {"run": f"{label}, serial", "runs": runs, "wall_s": serial_s, "ratio": 1.0, "note": "baseline"},
        {
            "run": f"{label}, pool of {workers}",
            "runs": runs,
            "wall_s": pool_s,
            "ratio": serial_s / pool_s,
            "note": same,
        },
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="Minutes of row time instead of a day")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="Sweep pool size")
    args = parser.parse_args()
    base = load_requests("synthetic:kind=code", duration_s=3600.0, seed=0)
    if args.quick:
        row_day = RowWorkload(base, PEAK_RPS_PER_SERVER, 600.0, start_s=PEAK_WINDOW_START_S)
        window = RowWorkload(base, PEAK_RPS_PER_SERVER, 300.0, start_s=PEAK_WINDOW_START_S)
        added = "0:6:6"
    else:
        row_day = RowWorkload(base, PEAK_RPS_PER_SERVER, 86_400.0)
        window = RowWorkload(base, PEAK_RPS_PER_SERVER, 7200.0, start_s=PEAK_WINDOW_START_S)
        added = "0:12:6"
    load = os.getloadavg()[0]
    timed_day = day(row_day)
    print_table(
        timed_day,
        [
            ("run", "run"),
            ("requests", "requests"),
            ("wall_s", "wall s"),
            ("requests_per_s", "simulated req/s"),
            ("ratio", "x engine alone"),
            ("note", "note"),
        ],
        title=f"(a) 52 servers, budget of 40, 0.9 req/s per server at the peak (load average {load:.1f})",
        formats={"requests": ",", "wall_s": ".1f", "requests_per_s": ",.0f", "ratio": ".2f"},
    )
    load = os.getloadavg()[0]
    print_table(
        sweeps(window, added, max(args.workers, 2)),
        [("run", "run"), ("runs", "row runs"), ("wall_s", "wall s"), ("ratio", "speed-up"), ("note", "note")],
        title=f"(b) sweep over {span(window.duration_s)} from 14:00 (load average {load:.1f})",
        formats={"wall_s": ".1f", "ratio": ".2f"},
    )
    if not args.quick:
        wall = float(str(timed_day[0]["wall_s"]))
        verdict = "met" if wall < BAR_S else "MISSED"
        print(f"issue 13's bar, a day of the 52-server row in under {BAR_S:.0f} s: {verdict} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
