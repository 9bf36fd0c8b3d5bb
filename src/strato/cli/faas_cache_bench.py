"""``strato faas bench-cache``: the example data-heavy apps with cache off, plain LRU and Faa$T, against a
real object store behind the shaping proxy (:mod:`strato.faas.live.cachebench`)."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console, print_table
from strato.errors import ConfigError

if TYPE_CHECKING:
    from strato.faas.live.cachebench import CacheBenchOptions, CacheBenchReport


def _ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e3:,.1f} ms"


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.1%}"


def _split(text: str, cast: type, option: str) -> tuple[object, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return tuple(cast(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option} takes a comma-separated list, not {text!r}") from None


def print_report(report: CacheBenchReport) -> None:
    cuts = {(c.app, c.mode): c for c in report.reductions}
    rows = []
    for result in report.results:
        cut = cuts.get((result.app, result.mode))
        rows.append(
            {
                "app": result.app,
                "mode": result.mode,
                "warm_mean": _ms(result.warm.mean_s),
                "warm_p50": _ms(result.warm.p50_s),
                "cut": _pct(cut.warm if cut else None),
                "cold_first": _ms(result.first_cold.mean_s),
                "after_reload": _ms(result.after_reload.mean_s),
                "reload_cut": _pct(cut.after_reload if cut else None),
                "hits": _pct(result.warm_hit_ratio),
                "prewarm": _pct(result.prewarm_share),
            }
        )
    print_table(
        rows,
        [
            ("app", "app"),
            ("mode", "cache"),
            ("warm_mean", "warm mean"),
            ("warm_p50", "warm p50"),
            ("cut", "vs off"),
            ("cold_first", "1st after reload"),
            ("after_reload", "first N mean"),
            ("reload_cut", "first N vs off"),
            ("hits", "warm hit ratio"),
            ("prewarm", "pre-warmed bytes"),
        ],
        title="Mean invocation latency per app and cache mode",
    )
    print_table(
        [
            {
                "name": t.name,
                "value": _pct(t.value),
                "target": t.target,
                "met": "-" if t.met is None else ("met" if t.met else "NOT MET"),
            }
            for t in report.targets
        ],
        [("name", "claim"), ("value", "measured"), ("target", "target"), ("met", "")],
        title="Faa$T's claims",
    )
    if report.ranged:
        print_table(
            [
                {
                    "instances": p.instances,
                    "live": p.started_instances,
                    "first": _ms(p.first_get_s),
                    "cold": _ms(p.cold_get_s),
                    "warm": _ms(p.warm_get_s),
                    "rate": f"{p.bytes / p.cold_get_s / 2**20:,.0f} MiB/s" if p.cold_get_s > 0 else "-",
                }
                for p in report.ranged
            ],
            [
                ("instances", "instances asked"),
                ("live", "live"),
                ("first", "first GET (unknown size)"),
                ("cold", "GET (miss, size known)"),
                ("warm", "GET (cached)"),
                ("rate", "miss rate"),
            ],
            title=f"One GET of {report.ranged[0].bytes / 2**20:g} MiB",
        )
    if report.working_set:
        print_table(
            [
                {
                    "mode": p.mode,
                    "ws": f"{p.working_set_bytes / p.shard_bytes:.2f}x",
                    "hits": _pct(p.hit_ratio),
                    "mean": _ms(p.latency.mean_s),
                    "instances": p.instances,
                }
                for p in report.working_set
            ],
            [
                ("mode", "cache"),
                ("ws", "working set / shard"),
                ("hits", "hit ratio"),
                ("mean", "mean latency"),
                ("instances", "instances"),
            ],
            title="Small-object app: hit ratio and latency vs working-set size",
        )
    for warning in report.warnings:
        console.print(f"[yellow]note:[/] {warning}")


def build_options(
    *,
    modes: str,
    apps: str,
    warm: int,
    cycles: int,
    first: int,
    latency: str,
    jitter: str,
    bandwidth: str,
    cache_size: str,
    consistency: str,
    keepalive: str,
    ranged_instances: str,
    ranged_size: str,
    working_set: str,
    working_set_shard: str,
    sandbox: bool,
) -> CacheBenchOptions:
    from strato.faas.live.cachebench import CacheBenchOptions

    return CacheBenchOptions(
        modes=tuple(str(m) for m in _split(modes, str, "--modes")),
        apps=tuple(str(a) for a in _split(apps, str, "--apps")),
        warm=warm,
        cycles=cycles,
        first=first,
        latency=latency,
        jitter=jitter,
        bandwidth=bandwidth,
        cache_size=cache_size,
        consistency=consistency,
        keepalive=keepalive,
        ranged_instances=tuple(int(str(n)) for n in _split(ranged_instances, int, "--ranged-instances")),
        ranged_size=ranged_size,
        working_set=tuple(float(str(m)) for m in _split(working_set, float, "--working-set")),
        working_set_shard=working_set_shard,
        sandbox=sandbox,
    )


def register(app: typer.Typer) -> None:
    @app.command("bench-cache")
    @friendly_errors
    def bench_cache(
        modes: Annotated[str, typer.Option(help="Cache modes, in order")] = "off,lru,faast",
        apps: Annotated[
            str, typer.Option(help="Example apps (examples/faast)")
        ] = "model,thumbnail,table,small,noreuse",
        warm: Annotated[int, typer.Option(help="Warm invocations per app and mode")] = 20,
        cycles: Annotated[int, typer.Option(help="Reloads (keep-alive unloads) per app and mode")] = 3,
        first: Annotated[int, typer.Option(help="Invocations measured right after each reload")] = 3,
        latency: Annotated[str, typer.Option(help="Proxy latency each way")] = "10ms",
        jitter: Annotated[str, typer.Option(help="Proxy latency jitter")] = "2ms",
        bandwidth: Annotated[str, typer.Option(help="Proxy bandwidth per connection")] = "100MB/s",
        cache_size: Annotated[str, typer.Option(help="Cache per instance (shard)")] = "512MiB",
        consistency: Annotated[str, typer.Option(help="strong or relaxed[:TTL]")] = "strong",
        keepalive: Annotated[
            str, typer.Option(help="Fixed keep-alive of the servers (the bench unloads apps itself)")
        ] = "10m",
        ranged_instances: Annotated[
            str, typer.Option(help="Instance counts for the large-object GET, e.g. 1,2,4; empty to skip")
        ] = "1,2,4",
        ranged_size: Annotated[str, typer.Option(help="Size of the large object")] = "256MiB",
        working_set: Annotated[
            str,
            typer.Option(
                help="Small-app working sets as multiples of --working-set-shard, e.g. 0.5,1,2,4; empty "
                "to skip"
            ),
        ] = "0.5,1,2,4",
        working_set_shard: Annotated[
            str, typer.Option(help="Cache per instance for the working-set sweep")
        ] = "1MiB",
        sandbox: Annotated[bool, typer.Option(help="Isolate instances (as strato faas serve)")] = True,
        keep: Annotated[
            Path | None, typer.Option(help="Keep the servers' logs and the store's data in this directory")
        ] = None,
        json_output: Annotated[bool, typer.Option("--json", help="Print the full report as JSON")] = False,
    ) -> None:
        """Measure Faa$T: each example app warm and after a reload, with cache off, LRU and Faa$T.

        Starts a real object store and a shaping proxy, seeds the example apps' objects, then one
        `strato faas serve` per cache mode, and judges Faa$T's claims (57 % lower mean latency on
        average over the data-heavy apps, 92 % on the best one, the no-reuse app within 2 %). Also the
        GET time of a large object with 1, 2 and 4 instances and the small app's hit ratio against its
        working-set size. Takes several minutes.
        """
        from strato.faas.live.cachebench import run_cache_bench

        options = build_options(
            modes=modes,
            apps=apps,
            warm=warm,
            cycles=cycles,
            first=first,
            latency=latency,
            jitter=jitter,
            bandwidth=bandwidth,
            cache_size=cache_size,
            consistency=consistency,
            keepalive=keepalive,
            ranged_instances=ranged_instances,
            ranged_size=ranged_size,
            working_set=working_set,
            working_set_shard=working_set_shard,
            sandbox=sandbox,
        )
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)

        def progress(text: str) -> None:
            print(text, file=sys.stderr, flush=True)

        report = run_cache_bench(options, progress=progress, root=keep)
        if json_output:
            print_json(report.to_json())
        else:
            print_report(report)
