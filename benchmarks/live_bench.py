"""Live platform: the lean backend against the faasd-like one, and cold starts per spawn mode.

    .venv/bin/python benchmarks/live_bench.py --repeat 5  # about 10 minutes: the numbers to report
    .venv/bin/python benchmarks/live_bench.py             # one run, about 2 minutes
    .venv/bin/python benchmarks/live_bench.py --quick     # about 30 s: a smoke test
    .venv/bin/python benchmarks/live_bench.py --json      # everything, machine info included

The same measurement as ``strato faas bench`` (:func:`strato.faas.live.bench.run_bench`): real servers,
one after the other, loaded by the load generator in its own process, and by wrk when it is installed
(``scripts/bench-deps.sh`` installs it). Absolute numbers depend on the machine (the servers, their
instances and the load generators share its CPUs); the lean/faasd ratios are the point, and the tables say
whether each reaches Junctiond's claim over the runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from strato.cli.common import print_json
from strato.cli.faas_bench import build_options, print_report
from strato.errors import StratoError
from strato.faas.live.bench import plot_report, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs for a smoke test")
    parser.add_argument("--duration", type=float, help="seconds of each throughput and latency run")
    parser.add_argument("--connections", type=int, help="closed-loop connections (default 16)")
    parser.add_argument("--rate", type=float, help="equal offered load in rps (default: auto)")
    parser.add_argument("--cold-starts", type=int, help="cold invocations per spawn mode")
    parser.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="search each backend's highest sustainable open-loop rate",
    )
    parser.add_argument("--repeat", type=int, help="complete runs, interleaved (default 1)")
    parser.add_argument(
        "--load-generator",
        help="what throughput and the low-load floor are judged on: auto (default), wrk or python",
    )
    parser.add_argument("--floor-duration", type=float, help="seconds of each low-load run (0 skips)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--plot", type=Path, help="write a PNG of the latency CDFs and throughputs")
    args = parser.parse_args(argv)
    try:
        options = build_options(
            quick=args.quick,
            duration=args.duration,
            connections=args.connections,
            rate=args.rate,
            cold_starts=args.cold_starts,
            search=args.search,
            repeat=args.repeat,
            load_generator=args.load_generator,
            floor=args.floor_duration,
        )
        report = run_bench(options, progress=lambda line: print(line, file=sys.stderr, flush=True))
        if args.plot is not None:
            plot_report(report, args.plot)
    except StratoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted (the servers were stopped)", file=sys.stderr)
        return 130
    if args.json:
        print_json(report.to_json())
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
