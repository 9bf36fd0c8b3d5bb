"""Live platform density: memory per idle warm instance and instances per GiB, fork-server vs fresh.

    .venv/bin/python benchmarks/density_bench.py                  # 20 instances per mode, about 30 s
    .venv/bin/python benchmarks/density_bench.py --instances 100  # more sharing of the template's pages
    .venv/bin/python benchmarks/density_bench.py --json           # every instance and process

The same measurement as ``strato faas density --spawn both`` (:func:`strato.faas.live.density.run_density`):
one real server per spawn mode, N idle instances of an echo function, PSS (with USS, RSS and the memory
cgroup's usage beside it) read from /proc/PID/smaps_rollup over every process of each instance. PSS
shares pages among every process mapping them, the fork-server's template and zygotes included, so the
per-instance figure falls as N grows; the machine's other Python processes share the interpreter's file
pages too.
"""

from __future__ import annotations

import argparse
import sys

from strato.cli.common import print_json
from strato.cli.faas_density import build_options, print_report
from strato.errors import StratoError
from strato.faas.live.density import run_density


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20, help="idle instances per spawn mode (1-256)")
    parser.add_argument("--no-sandbox", action="store_true", help="instances without isolation")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    try:
        options = build_options(instances=args.instances, spawn="both", sandbox=not args.no_sandbox)
        report = run_density(options, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except StratoError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
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
