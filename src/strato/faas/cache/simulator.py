"""Cache simulation over a blob access trace: hit ratio and bytes saved per app for a cache size and
policy, so a user can size each app's cache.

It drives the same :class:`~strato.faas.cache.appcache.AppCache` as the live storage broker (payloads
``None``), so the two cannot disagree on what hits. Each app gets its own cache of
``cache_bytes_per_app`` split into ``shards`` equal shards. Traces say nothing about instances, so
unloading is modelled by a fixed keep-alive: with ``keepalive_s`` set, an app idle for longer than that
loses its cache before its next read (as keep-alive unload drops it on the live platform); with
``prewarm`` the cache is then refilled from the app's access history before that read, i.e. the
simulator assumes the pre-warm fetches finish during start-up. Without ``keepalive_s`` the cache is never
unloaded: the pure sizing question. An object whose size changes between reads counts as a new version:
that read is a miss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from strato.errors import ConfigError
from strato.faas.cache.appcache import AppCache, Rejected
from strato.faas.cache.history import DEFAULT_HALF_LIFE_S, AccessHistory
from strato.faas.cache.policies import check_policy
from strato.traces.blob import AccessTrace


@dataclass(frozen=True)
class AppCacheSim:
    """One app's (or the total's, ``app == "total"``) simulated reads."""

    app: str
    accesses: int
    hits: int
    hit_ratio: float
    bytes_requested: int
    bytes_saved: int  # bytes served from the cache instead of the store
    byte_hit_ratio: float
    objects: int  # distinct objects read
    evictions: int
    rejected: int  # misses on objects larger than one shard (never cached)
    unloads: int
    prewarm_inserts: int
    prewarm_bytes: int  # fetched from the store to pre-warm (not requested by the app)
    prewarm_hits: int


@dataclass(frozen=True)
class CacheSimResult:
    policy: str
    cache_bytes_per_app: int
    shards: int
    prewarm: bool
    keepalive_s: float | None
    source: str
    apps: tuple[AppCacheSim, ...]  # by bytes requested, largest first
    total: AppCacheSim

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _simulate_app(
    name: str,
    times: list[float],
    keys: list[str],
    sizes: list[int],
    *,
    shard_bytes: int,
    shards: int,
    policy: str,
    keepalive_s: float | None,
    prewarm: bool,
    half_life_s: float,
) -> AppCacheSim:
    cache = AppCache(shard_bytes, policy, clock=float)
    shard_ids = [str(index) for index in range(shards)]
    for shard_id in shard_ids:
        cache.add_shard(shard_id)
    history = AccessHistory(half_life_s=half_life_s) if prewarm else None
    lookup, insert, record_miss = cache.lookup, cache.insert, cache.record_miss
    unloads = rejected = prewarm_bytes = 0
    # Idle gaps never longer than this: no unloads.
    gap = math.inf if keepalive_s is None else keepalive_s
    last = times[0] if times else 0.0
    for t, key, size in zip(times, keys, sizes, strict=True):
        if t - last > gap:
            unloads += 1
            for shard_id in shard_ids:
                cache.remove_shard(shard_id)
                cache.add_shard(shard_id)
            if history is not None:
                for warm_key, warm_size in history.prewarm_plan(shard_bytes * shards, t):
                    insert(warm_key, "", warm_size, prewarm=True, now=t)
                    prewarm_bytes += warm_size
        last = t
        entry = lookup(key, now=t)
        if entry is None or entry.size != size:
            if entry is not None:
                cache.record_validation(key, changed=True)
            record_miss(key, size)
            if type(insert(key, "", size, now=t)) is Rejected:
                rejected += 1
        if history is not None:
            history.record(key, size, t)
    stats = cache.stats()
    requested = stats.bytes_from_cache + stats.bytes_from_store
    return AppCacheSim(
        app=name,
        accesses=len(times),
        hits=stats.hits,
        hit_ratio=_ratio(stats.hits, len(times)),
        bytes_requested=requested,
        bytes_saved=stats.bytes_from_cache,
        byte_hit_ratio=_ratio(stats.bytes_from_cache, requested),
        objects=len(set(keys)),
        evictions=stats.evictions,
        rejected=rejected,
        unloads=unloads,
        prewarm_inserts=stats.prewarm_inserts,
        prewarm_bytes=prewarm_bytes,
        prewarm_hits=stats.prewarm_hits,
    )


def _total(rows: list[AppCacheSim]) -> AppCacheSim:
    def total(field: str) -> int:
        return sum(int(getattr(row, field)) for row in rows)

    accesses, hits = total("accesses"), total("hits")
    requested, saved = total("bytes_requested"), total("bytes_saved")
    return AppCacheSim(
        app="total",
        accesses=accesses,
        hits=hits,
        hit_ratio=_ratio(hits, accesses),
        bytes_requested=requested,
        bytes_saved=saved,
        byte_hit_ratio=_ratio(saved, requested),
        objects=total("objects"),
        evictions=total("evictions"),
        rejected=total("rejected"),
        unloads=total("unloads"),
        prewarm_inserts=total("prewarm_inserts"),
        prewarm_bytes=total("prewarm_bytes"),
        prewarm_hits=total("prewarm_hits"),
    )


def simulate_cache(
    trace: AccessTrace,
    *,
    cache_bytes_per_app: int,
    policy: str = "lru",
    prewarm: bool = False,
    keepalive_s: float | None = None,
    shards: int = 1,
    half_life_s: float = DEFAULT_HALF_LIFE_S,
) -> CacheSimResult:
    """Replay ``trace`` through one :class:`AppCache` per app (see the module doc for the model)."""
    policy = check_policy(policy)
    if shards < 1 or cache_bytes_per_app < shards:
        raise ConfigError(f"cache size {cache_bytes_per_app} bytes cannot be split into {shards} shard(s)")
    if prewarm and keepalive_s is None:
        raise ConfigError("pre-warm happens when an unloaded app loads again: give a keep-alive (e.g. 10m)")
    if keepalive_s is not None and keepalive_s < 0:
        raise ConfigError(f"keep-alive must not be negative, got {keepalive_s} s")
    # Group each app's reads, keeping time order within the app (the sort is stable).
    order = np.argsort(trace.app, kind="stable")
    bounds = np.searchsorted(trace.app[order], np.arange(len(trace.apps) + 1))
    times, objects, sizes = (
        trace.time_s[order].tolist(),
        trace.obj[order].tolist(),
        trace.size_bytes[order].tolist(),
    )
    names = trace.objects
    rows: list[AppCacheSim] = []
    for app, name in enumerate(trace.apps):
        start, end = int(bounds[app]), int(bounds[app + 1])
        if start == end:
            continue
        rows.append(
            _simulate_app(
                name,
                times[start:end],
                [names[code] for code in objects[start:end]],
                sizes[start:end],
                shard_bytes=cache_bytes_per_app // shards,
                shards=shards,
                policy=policy,
                keepalive_s=keepalive_s,
                prewarm=prewarm,
                half_life_s=half_life_s,
            )
        )
    rows.sort(key=lambda row: (-row.bytes_requested, row.app))
    return CacheSimResult(
        policy=policy,
        cache_bytes_per_app=cache_bytes_per_app,
        shards=shards,
        prewarm=prewarm,
        keepalive_s=keepalive_s,
        source=trace.source,
        apps=tuple(rows),
        total=_total(rows),
    )
