"""``strato faas cache``: size an app's Faa$T cache on an access trace, and write synthetic traces."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from strato.cli.common import duration_option, friendly_errors, print_json
from strato.cli.faas_live import StateOption, TokenOption, UrlOption, _client
from strato.core.console import console, print_table
from strato.core.units import parse_size_mb
from strato.errors import ConfigError

if TYPE_CHECKING:
    from strato.faas.cache.simulator import AppCacheSim, CacheSimResult

app = typer.Typer(help="Faa$T per-application cache: simulate on access traces.", no_args_is_help=True)


def size_option(text: str, option: str) -> int:
    """Bytes for an option's ``text``, which must name its unit (64MiB, 5.2KB, 1GiB)."""
    try:
        float(text)
    except ValueError:
        size = round(parse_size_mb(text) * 2**20)
    else:
        raise ConfigError(f"{option} needs a unit, e.g. 64MiB or 512KB (got {text!r})")
    if size <= 0:
        raise ConfigError(f"{option} must be positive (got {text!r})")
    return size


def human_bytes(value: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:,.1f} {unit}"
    return f"{value:,.0f} B"


def _row(sim: AppCacheSim) -> dict[str, Any]:
    return {
        "app": sim.app,
        "accesses": sim.accesses,
        "objects": sim.objects,
        "hit_ratio": f"{sim.hit_ratio:.1%}",
        "byte_hit_ratio": f"{sim.byte_hit_ratio:.1%}",
        "requested": human_bytes(sim.bytes_requested),
        "saved": human_bytes(sim.bytes_saved),
        "evictions": sim.evictions,
        "unloads": sim.unloads,
        "prewarm_hits": sim.prewarm_hits,
    }


def print_simulation(result: CacheSimResult, *, top: int) -> None:
    rows = [_row(sim) for sim in result.apps[:top]]
    if len(result.apps) > top:
        rows.append({"app": f"... {len(result.apps) - top} more apps"})
    rows.append(_row(result.total))
    columns = [
        ("app", "app"),
        ("accesses", "reads"),
        ("objects", "objects"),
        ("hit_ratio", "hit ratio"),
        ("byte_hit_ratio", "byte hit ratio"),
        ("requested", "requested"),
        ("saved", "saved"),
        ("evictions", "evictions"),
    ]
    if result.keepalive_s is not None:
        columns.append(("unloads", "unloads"))
    if result.prewarm:
        columns.append(("prewarm_hits", "pre-warm hits"))
    keepalive = "never unloaded" if result.keepalive_s is None else f"keep-alive {result.keepalive_s:g} s"
    title = (
        f"{result.policy} cache of {human_bytes(result.cache_bytes_per_app)} per app"
        f"{f' in {result.shards} shards' if result.shards > 1 else ''}, {keepalive}"
        f"{', pre-warm on reload' if result.prewarm else ''} ({result.source}); apps by bytes read"
    )
    print_table(rows, columns, title=title)
    if result.total.rejected:
        console.print(
            f"note: {result.total.rejected:,} reads were of objects larger than one shard (never cached)",
            style="dim",
        )
    if result.prewarm:
        console.print(
            f"note: pre-warm fetched {human_bytes(result.total.prewarm_bytes)} "
            f"({result.total.prewarm_inserts:,} objects) from the store",
            style="dim",
        )


@app.command()
@friendly_errors
def simulate(
    trace: Annotated[
        str,
        typer.Option(
            help="Access-trace CSV (time_s,app,object,size_bytes) or synthetic[:apps=N,accesses=M,seed=S]"
        ),
    ] = "synthetic",
    size: Annotated[str, typer.Option(help="Cache size per app, with a unit (e.g. 64MiB)")] = "64MiB",
    policy: Annotated[str, typer.Option(help="Eviction policy: lru (Faa$T's) or gdsf (size-aware)")] = "lru",
    shards: Annotated[int, typer.Option(min=1, help="Split each app's cache over this many instances")] = 1,
    keepalive: Annotated[
        str | None,
        typer.Option(help="Unload an app idle this long (its cache is dropped), with a unit: 10m"),
    ] = None,
    prewarm: Annotated[
        bool,
        typer.Option(
            "--prewarm", help="Pre-warm from the app's access history on reload (needs --keepalive)"
        ),
    ] = False,
    top: Annotated[int, typer.Option(min=0, help="Apps shown (largest readers first)")] = 10,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON (every app)")
    ] = False,
) -> None:
    """Hit ratio and bytes saved per app for a cache size and eviction policy."""
    from strato.faas.cache.simulator import simulate_cache
    from strato.traces.blob import load_access_trace

    cache_bytes = size_option(size, "--size")
    keepalive_s = duration_option(keepalive, "--keepalive") if keepalive is not None else None
    if prewarm and keepalive_s is None:
        raise ConfigError(
            "--prewarm refills the cache when an unloaded app comes back: add --keepalive (e.g. 10m)"
        )
    result = simulate_cache(
        load_access_trace(trace),
        cache_bytes_per_app=cache_bytes,
        policy=policy,
        prewarm=prewarm,
        keepalive_s=keepalive_s,
        shards=shards,
    )
    if json_output:
        print_json(result.to_json())
        return
    print_simulation(result, top=top)


@app.command("trace")
@friendly_errors
def write_trace(
    out: Annotated[Path, typer.Option(help="CSV file to write (time_s,app,object,size_bytes)")],
    apps: Annotated[int, typer.Option(min=1, help="Applications")] = 100,
    accesses: Annotated[int, typer.Option(min=2, help="Reads in all")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    no_reuse_share: Annotated[
        float, typer.Option(help="Share of apps that never read an object twice")
    ] = 0.5,
    zipf_s: Annotated[float, typer.Option(help="Zipf exponent of object popularity in the other apps")] = 1.0,
    duration: Annotated[str, typer.Option(help="Span of the trace, with a unit")] = "1d",
) -> None:
    """Write a synthetic blob access trace from Azure's published blob statistics."""
    from strato.traces.blob import synthetic_access_trace, write_access_trace

    trace = synthetic_access_trace(
        apps=apps,
        accesses=accesses,
        seed=seed,
        no_reuse_share=no_reuse_share,
        zipf_s=zipf_s,
        duration_s=duration_option(duration, "--duration"),
    )
    write_access_trace(trace, out)
    console.print(
        f"wrote {len(trace):,} reads by {len(trace.apps):,} apps of {len(trace.objects):,} objects to {out}"
    )


@app.command("stats")
@friendly_errors
def live_stats(
    name: Annotated[str, typer.Argument(help="Function (application) name")],
    url: UrlOption = "http://127.0.0.1:8080",
    token: TokenOption = None,
    state_dir: StateOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
) -> None:
    """A live application's cache counters (hits, misses, validations, pre-warm, evictions, unloads)."""
    stats = _client(url, token, state_dir).cache_stats(name)
    if json_output:
        print_json(stats)
        return
    reads = stats["hits"] + stats["misses"]
    rows = [
        ("cache / consistency", f"{stats['cache']} / {stats['consistency']}"),
        ("reads (hits + misses)", f"{reads:,}"),
        ("hit ratio", f"{stats['hit_ratio']:.1%}"),
        ("validations (stale)", f"{stats['validations']:,} ({stats['stale_validations']:,})"),
        ("bytes from cache", human_bytes(stats["bytes_from_cache"])),
        ("bytes from store", human_bytes(stats["bytes_from_store"])),
        ("peer hits (another instance's shard)", f"{stats['peer_hits']:,}"),
        (
            "pre-warm: objects loaded / first hits",
            f"{stats['prewarm_inserts']:,} / {stats['prewarm_hits']:,}",
        ),
        ("evictions", f"{stats['evictions']:,} ({human_bytes(stats['evicted_bytes'])})"),
        ("dropped at unload", f"{stats['unload_drops']:,} ({human_bytes(stats['unload_dropped_bytes'])})"),
        (
            "held now / capacity",
            f"{human_bytes(stats['used_bytes'])} / {human_bytes(stats['capacity_bytes'])} "
            f"over {stats['shards']} shard(s)",
        ),
        ("reloads", f"{stats['reloads']:,}"),
    ]
    print_table(
        [{"counter": counter, "value": value} for counter, value in rows],
        [("counter", "counter"), ("value", "value")],
        title=f"cache of {name}",
    )
