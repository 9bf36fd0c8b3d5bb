"""Faa$T on the live platform: the example data-heavy apps with cache off, plain LRU and Faa$T.

    .venv/bin/python benchmarks/faast_bench.py                 # everything, about 10 minutes
    .venv/bin/python benchmarks/faast_bench.py --no-extras     # the per-app table only
    .venv/bin/python benchmarks/faast_bench.py --consistency relaxed:30s
    .venv/bin/python benchmarks/faast_bench.py --json          # the full report, machine info included

The same measurement as ``strato faas bench-cache`` (:func:`strato.faas.live.cachebench.run_cache_bench`):
a real object store behind the shaping proxy (10 ms each way, 100 MB/s by default), the apps of
``examples/faast`` on one ``strato faas serve`` per cache mode, each app warm and after keep-alive
reloads. The table says whether Faa$T's claims (57 % lower mean latency on average over the data-heavy
apps, 92 % on the best one, the no-reuse app within 2 %) hold here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from strato.cli.common import print_json
from strato.cli.faas_cache_bench import build_options, print_report
from strato.errors import StratoError
from strato.faas.live.cachebench import run_cache_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="off,lru,faast", help="cache modes, in order")
    parser.add_argument("--apps", default="model,thumbnail,table,small,noreuse", help="example apps")
    parser.add_argument("--warm", type=int, default=20, help="warm invocations per app and mode")
    parser.add_argument("--cycles", type=int, default=3, help="keep-alive reloads per app and mode")
    parser.add_argument("--first", type=int, default=3, help="invocations measured after each reload")
    parser.add_argument("--latency", default="10ms", help="proxy latency each way")
    parser.add_argument("--jitter", default="2ms", help="proxy latency jitter")
    parser.add_argument("--bandwidth", default="100MB/s", help="proxy bandwidth per connection")
    parser.add_argument("--cache-size", default="512MiB", help="cache per instance (shard)")
    parser.add_argument("--consistency", default="strong", help="strong or relaxed[:TTL]")
    parser.add_argument("--keepalive", default="10m", help="fixed keep-alive of the servers")
    parser.add_argument("--ranged-instances", default="1,2,4", help="instances for the large GET")
    parser.add_argument("--ranged-size", default="256MiB", help="size of the large object")
    parser.add_argument("--working-set", default="0.5,1,2,4", help="small-app working sets, x shard")
    parser.add_argument("--working-set-shard", default="1MiB", help="cache per instance for the sweep")
    parser.add_argument("--no-extras", action="store_true", help="skip the large GET and the sweep")
    parser.add_argument("--no-sandbox", action="store_true", help="instances without isolation")
    parser.add_argument("--keep", type=Path, help="keep logs and the store's data in this directory")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    try:
        options = build_options(
            modes=args.modes,
            apps=args.apps,
            warm=args.warm,
            cycles=args.cycles,
            first=args.first,
            latency=args.latency,
            jitter=args.jitter,
            bandwidth=args.bandwidth,
            cache_size=args.cache_size,
            consistency=args.consistency,
            keepalive=args.keepalive,
            ranged_instances="" if args.no_extras else args.ranged_instances,
            ranged_size=args.ranged_size,
            working_set="" if args.no_extras else args.working_set,
            working_set_shard=args.working_set_shard,
            sandbox=not args.no_sandbox,
        )
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
        report = run_cache_bench(
            options, progress=lambda text: print(text, file=sys.stderr, flush=True), root=args.keep
        )
    except StratoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print_json(report.to_json())
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
