"""Faa$T on the live platform, measured: ``strato faas bench-cache`` and ``benchmarks/faast_bench.py``.

The claim (Romero et al., SoCC 2021): a per-application cache that lives in the app's instances cuts the
mean invocation latency of data-heavy functions by 57 % on average and up to 92 %, against no cache.

What runs, in order:

1. A real object store (:class:`strato.storage.StoreServer`) and a shaping proxy in front of it
   (:class:`strato.storage.ShapingProxy`, by default 10 ms each way and 100 MB/s), so that a GET costs
   what it costs against a cloud blob store and not what loopback costs.
2. :func:`seed_store` uploads each example app's objects (``examples/faast``), generated from a seed:
   a numpy weight matrix, photo-like JPEGs, a Parquet table of sales rows, small 5-30 KB objects and
   objects read once each. The store is seeded directly, not through the proxy: seeding is not measured.
3. For each cache mode (``off``, ``lru``, ``faast``) a fresh ``strato faas serve --storage <proxy>
   --cache <mode>``. For each app, one at a time: a first invocation (the cache is empty), ``warm``
   invocations back to back (their latency is the *warm* latency), then ``cycles`` reloads: unload the
   app (``POST /system/functions/{name}/unload``, what a keep-alive unload does: its instances stop, its
   cache goes and, for ``faast``, its access history is persisted), then ``first`` invocations right
   away; the first of them is a cold start. The cache's counters (``/system/stats``) before and after
   each reload give the share of the bytes the first invocations read that came from pre-warmed entries.
4. Optionally: the time of one GET of a large object (256 MiB) with 1, 2 and 4 instances of an app
   (Faa$T fetches ranges of it in parallel, one per instance), and, for the small-object app, the hit
   ratio and latency against the working-set size (relative to one instance's cache).

The reduction of a mode is ``1 - mean(mode) / mean(off)`` on the warm mean latency. The targets: an
average reduction over the data-heavy apps (every app but ``noreuse``) of at least 57 % for ``faast``,
at least 92 % on the best one, ``noreuse`` at most 2 % slower with ``faast`` than with ``off``, and
the first invocations after a reload faster with ``faast`` (pre-warmed) than with ``lru``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from strato.core.units import parse_duration, parse_size_mb
from strato.errors import ConfigError, StratoError
from strato.faas.live.bench import _wait_until, machine_info
from strato.faas.live.client import FaasClient
from strato.faas.live.serverproc import ServerProcess, running_server
from strato.storage.proxy import parse_bandwidth

APPS: Final = ("model", "thumbnail", "table", "small", "noreuse")
DATA_HEAVY: Final = ("model", "thumbnail", "table", "small")
MODES: Final = ("off", "lru", "faast")
BUCKETS: Final = {
    "model": "faast-model",
    "thumbnail": "faast-images",
    "table": "faast-tables",
    "small": "faast-small",
    "noreuse": "faast-noreuse",
}
BIG_BUCKET: Final = "faast-big"
BIG_KEY: Final = "blob-256"

AVERAGE_TARGET: Final = 0.57
"""Faa$T: 57 % lower mean latency than no cache, on average over the data-heavy apps."""
BEST_TARGET: Final = 0.92
"""Faa$T: up to 92 % lower on the best app."""
NOREUSE_TARGET: Final = 0.02
"""An app that never re-reads an object may be at most 2 % slower with the cache than without."""

EXAMPLES_DIR: Final = Path(__file__).resolve().parents[4] / "examples" / "faast"

# Reads one object and says how long the platform took to hand it over; ``hold_s`` keeps an instance
# busy so that concurrent requests make the platform start more instances.
GETTER_HANDLER: Final = """\
import json
import time


def handle(event, context):
    request = event.json() or {}
    if request.get("hold_s"):
        time.sleep(float(request["hold_s"]))
        return {"held": True}
    start = time.perf_counter()
    data = context.storage.get(request["bucket"], request["key"])
    return {"get_s": time.perf_counter() - start, "bytes": len(data)}
"""

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """What :func:`seed_store` generates; sizes in bytes. Everything follows from ``seed``."""

    seed: int = 0
    model_bytes: int = 96 * 2**20
    model_features: int = 2048
    images: tuple[tuple[int, int], ...] = ((3000, 2000), (4000, 3000), (3000, 2000), (4000, 3000))
    table_bytes: int = 48 * 2**20
    small_objects: int = 512
    small_min_bytes: int = 5 * 1024
    small_max_bytes: int = 30 * 1024
    noreuse_objects: int = 256
    noreuse_bytes: int = 64 * 1024
    big_bytes: int = 0
    """The large object for the ranged-fetch measurement; 0: none."""

    def __post_init__(self) -> None:
        if self.model_bytes < self.model_features * 4:
            raise ConfigError(f"a model of {self.model_bytes} bytes is smaller than one row of weights")
        if not 0 < self.small_min_bytes <= self.small_max_bytes:
            raise ConfigError("small objects need 0 < min size <= max size")
        for name in ("small_objects", "noreuse_objects", "table_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"the workload's {name} must be positive")


@dataclass(frozen=True)
class SeededObject:
    bucket: str
    key: str
    size: int


@dataclass(frozen=True)
class Seeded:
    """The objects of each app, as uploaded."""

    objects: dict[str, tuple[SeededObject, ...]]

    def total_bytes(self) -> int:
        return sum(o.size for objects in self.objects.values() for o in objects)


def model_npy(rng: np.random.Generator, total_bytes: int, features: int) -> bytes:
    """A ``features x classes`` float32 weight matrix saved with ``np.save``, about ``total_bytes``."""
    classes = max(1, total_bytes // (4 * features))
    weights = rng.standard_normal((features, classes), dtype=np.float32) / np.float32(math.sqrt(features))
    out = io.BytesIO()
    np.save(out, weights, allow_pickle=False)
    return out.getvalue()


def photo_jpeg(rng: np.random.Generator, width: int, height: int, quality: int = 92) -> bytes:
    """A photo-like JPEG: smooth colour regions, mid-scale texture and sensor noise, so that it
    compresses (and decodes) like a camera picture rather than like a flat or a white-noise image."""
    from PIL import Image

    def field(cells_x: int, cells_y: int) -> np.ndarray:
        small = rng.integers(0, 256, (max(2, cells_y), max(2, cells_x), 3), dtype=np.uint8)
        resized = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        return np.asarray(resized, dtype=np.float32)

    pixels = 0.6 * field(9, 6) + 0.4 * field(width // 40, height // 40)
    pixels += rng.normal(0.0, 6.0, (height, width, 3)).astype(np.float32)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=quality)
    return out.getvalue()


REGIONS: Final = (
    "north", "south", "east", "west", "central", "coast",
    "alps", "delta", "plains", "islands", "valley", "metro",
)  # fmt: skip


def sales_parquet(rng: np.random.Generator, total_bytes: int) -> bytes:
    """A Parquet table of sales rows (region, product, amount, quantity, time), about ``total_bytes``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # About 21 bytes a row once written (amount and time do not compress; the rest is dictionary- or
    # bit-packed), measured with pyarrow's defaults (snappy).
    rows = max(1000, total_bytes // 21)
    regions = pa.DictionaryArray.from_arrays(
        pa.array(rng.integers(0, len(REGIONS), rows, dtype=np.int32)), pa.array(REGIONS)
    )
    table = pa.table(
        {
            "region": regions,
            "product": pa.array(rng.zipf(1.3, rows).clip(max=5000).astype(np.int32)),
            "amount": pa.array(np.round(rng.lognormal(3.0, 1.0, rows), 2)),
            "quantity": pa.array(rng.poisson(3.0, rows).astype(np.int32)),
            "time_us": pa.array(np.sort(rng.integers(0, 86_400_000_000 * 30, rows))),
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=256 * 1024)
    return out.getvalue()


def generate(workload: Workload, apps: Sequence[str] = APPS) -> Iterator[tuple[str, str, str, bytes]]:
    """``(app, bucket, key, data)`` for each object of ``apps``, the same bytes for the same workload."""

    # One generator per app, so an app's objects do not depend on which other apps are seeded.
    def rng(app: str) -> np.random.Generator:
        return np.random.default_rng([workload.seed, APPS.index(app) if app in APPS else len(APPS)])

    if "model" in apps:
        data = model_npy(rng("model"), workload.model_bytes, workload.model_features)
        yield "model", BUCKETS["model"], "weights.npy", data
    if "thumbnail" in apps:
        images = rng("thumbnail")
        for index, (width, height) in enumerate(workload.images):
            yield "thumbnail", BUCKETS["thumbnail"], f"photo-{index}.jpg", photo_jpeg(images, width, height)
    if "table" in apps:
        yield "table", BUCKETS["table"], "sales.parquet", sales_parquet(rng("table"), workload.table_bytes)
    if "small" in apps:
        small = rng("small")
        # Log-uniform between the bounds: most objects near the small end, as in the blob trace.
        low, high = math.log(workload.small_min_bytes), math.log(workload.small_max_bytes)
        for index in range(workload.small_objects):
            size = int(math.exp(small.uniform(low, high)))
            yield "small", BUCKETS["small"], f"obj-{index:05d}", small.bytes(size)
    if "noreuse" in apps:
        once = rng("noreuse")
        for index in range(workload.noreuse_objects):
            yield "noreuse", BUCKETS["noreuse"], f"once-{index:05d}", once.bytes(workload.noreuse_bytes)
    if workload.big_bytes > 0:
        yield "big", BIG_BUCKET, BIG_KEY, rng("big").bytes(workload.big_bytes)


async def _upload(url: str, workload: Workload, apps: Sequence[str]) -> Seeded:
    from strato.storage import open_store

    store = open_store(url)
    objects: dict[str, list[SeededObject]] = {}
    try:
        for bucket in {*(BUCKETS[app] for app in apps), *([BIG_BUCKET] if workload.big_bytes else [])}:
            await store.create_bucket(bucket)
        pending: list[Any] = []
        for app, bucket, key, data in generate(workload, apps):
            objects.setdefault(app, []).append(SeededObject(bucket, key, len(data)))
            pending.append(store.put(bucket, key, data))
            if len(pending) >= 16:  # a bounded number of uploads (and their bytes) in flight
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await store.close()
    return Seeded({app: tuple(items) for app, items in objects.items()})


def seed_store(url: str, workload: Workload | None = None, apps: Sequence[str] = APPS) -> Seeded:
    """Generate and upload the objects of ``apps`` to the store at ``url`` (``s3://HOST:PORT``)."""
    unknown = sorted(set(apps) - set(APPS))
    if unknown:
        raise ConfigError(f"unknown apps {unknown}; the example apps are {', '.join(APPS)}")
    return asyncio.run(_upload(url, workload or Workload(), apps))


# ------------------------------------------------------------------------------------------- requests


class Requests:
    """The request bodies the bench sends each app, with the bytes each one makes the app read."""

    def __init__(self, seeded: Seeded, seed: int, *, small_keys: int = 4, zipf_s: float = 1.1) -> None:
        self.seeded = seeded
        self.rng = np.random.default_rng([seed, 99])
        self.small_keys = small_keys
        small = seeded.objects.get("small", ())
        ranks = np.arange(1, len(small) + 1, dtype=np.float64)
        self.zipf = ranks**-zipf_s / np.sum(ranks**-zipf_s) if len(small) else ranks
        self.next_once = 0
        self.count = 0

    def next(self, app: str, *, among: int | None = None) -> tuple[bytes, int]:
        """The next request for ``app`` and the bytes it reads; ``among`` limits the small app to its
        first objects, drawn uniformly (a working set of that many objects)."""
        objects = self.seeded.objects[app]
        self.count += 1
        if app == "model":
            request: dict[str, Any] = {"bucket": objects[0].bucket, "key": objects[0].key, "seed": self.count}
            return json.dumps(request).encode(), objects[0].size
        if app == "thumbnail":
            image = objects[self.count % len(objects)]
            request = {"bucket": image.bucket, "key": image.key, "size": [256, 256]}
            return json.dumps(request).encode(), image.size
        if app == "table":
            by = "region" if self.count % 2 else "product"
            request = {"bucket": objects[0].bucket, "key": objects[0].key, "by": by, "min_quantity": 2}
            return json.dumps(request).encode(), objects[0].size
        if app == "small":
            if among is None:
                picks = self.rng.choice(len(objects), self.small_keys, p=self.zipf)
            else:
                picks = self.rng.integers(0, min(among, len(objects)), self.small_keys)
            chosen = [objects[int(i)] for i in picks]
            request = {"bucket": chosen[0].bucket, "keys": [o.key for o in chosen]}
            return json.dumps(request).encode(), sum(o.size for o in chosen)
        if app == "noreuse":
            if self.next_once >= len(objects):
                raise StratoError(
                    f"the noreuse app has read all its {len(objects)} objects; seed more "
                    "(Workload.noreuse_objects) or make fewer invocations"
                )
            once = objects[self.next_once]
            self.next_once += 1
            return json.dumps({"bucket": once.bucket, "key": once.key}).encode(), once.size
        raise ConfigError(f"unknown app {app!r}")


# ------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Latency:
    count: int
    mean_s: float
    p50_s: float
    p99_s: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Latency:
        if not samples:
            return cls(0, math.nan, math.nan, math.nan)
        ordered = sorted(samples)
        return cls(
            len(ordered),
            statistics.fmean(ordered),
            float(np.percentile(ordered, 50)),
            float(np.percentile(ordered, 99)),
        )


@dataclass(frozen=True)
class AppResult:
    """One app under one cache mode."""

    app: str
    mode: str
    warm: Latency
    first_cold: Latency
    """The first invocation after each reload (a cold start)."""
    after_reload: Latency
    """All of the first invocations after each reload."""
    warm_hit_ratio: float | None
    """Cache hits / (hits + misses) over the warm invocations; None without cache counters."""
    prewarm_share: float | None
    """Of the bytes the first invocations after a reload read, the share served by pre-warmed entries."""
    reload_hit_ratio: float | None
    bytes_per_invocation: float


@dataclass(frozen=True)
class Reduction:
    app: str
    mode: str
    warm: float | None
    """``1 - warm mean / off's warm mean``; None without an ``off`` run."""
    after_reload: float | None


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    target: str
    met: bool | None


@dataclass(frozen=True)
class RangedPoint:
    instances: int
    started_instances: int
    """Instances the app had when the GET ran (the platform may start more than asked)."""
    first_get_s: float
    """The very first GET: an object the platform has never seen is read whole, over one connection."""
    cold_get_s: float
    """A miss once the application's history knows the object (after an unload): Faa$T reads it in
    ranges over as many parallel connections as the application may have instances."""
    warm_get_s: float
    bytes: int


@dataclass(frozen=True)
class WorkingSetPoint:
    mode: str
    working_set_bytes: int
    shard_bytes: int
    hit_ratio: float | None
    latency: Latency
    instances: int


@dataclass(frozen=True)
class CacheBenchOptions:
    modes: tuple[str, ...] = MODES
    apps: tuple[str, ...] = APPS
    warm: int = 20
    cycles: int = 3
    first: int = 3
    latency: str = "10ms"
    jitter: str = "2ms"
    bandwidth: str = "100MB/s"
    cache_size: str = "512MiB"
    consistency: str = "strong"
    keepalive: str = "10m"
    """Fixed keep-alive of the servers: long, so that only the bench's own unloads reload an app."""
    memory: str = "1Gi"
    sandbox: bool = True
    ranged_instances: tuple[int, ...] = ()
    ranged_size: str = "256MiB"
    working_set: tuple[float, ...] = ()
    """Working-set sizes as multiples of ``working_set_shard``; empty: no sweep."""
    working_set_shard: str = "1MiB"
    working_set_invocations: int = 60
    workload: Workload = field(default_factory=Workload)
    start_timeout_s: float = 60.0
    invoke_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for mode in self.modes:
            if mode not in MODES:
                raise ConfigError(f"unknown cache mode {mode!r}; choose from {', '.join(MODES)}")
        for app in self.apps:
            if app not in APPS:
                raise ConfigError(f"unknown app {app!r}; choose from {', '.join(APPS)}")
        if self.warm < 1 or self.cycles < 0 or self.first < 1:
            raise ConfigError("--warm and --first must be at least 1 and --cycles at least 0")
        if any(n < 1 for n in self.ranged_instances):
            raise ConfigError("--ranged-instances takes positive instance counts, e.g. 1,2,4")
        if any(not (m > 0) for m in self.working_set):
            raise ConfigError("--working-set takes positive multiples of the shard size, e.g. 0.5,1,2,4")
        for text in (self.latency, self.jitter, self.keepalive):
            parse_duration(text)
        for text in (self.cache_size, self.ranged_size, self.working_set_shard, self.memory):
            parse_size_mb(text)
        parse_bandwidth(self.bandwidth, "--bandwidth")
        if self.consistency != "strong" and not self.consistency.startswith("relaxed"):
            raise ConfigError(f"--consistency must be strong or relaxed[:TTL], not {self.consistency!r}")

    @property
    def noreuse_needed(self) -> int:
        return 1 + self.warm + self.cycles * self.first


@dataclass(frozen=True)
class CacheBenchReport:
    options: dict[str, Any]
    machine: dict[str, Any]
    seeded_bytes: dict[str, int]
    results: list[AppResult]
    reductions: list[Reduction]
    targets: list[Target]
    ranged: list[RangedPoint]
    working_set: list[WorkingSetPoint]
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _bytes(text: str) -> int:
    return round(parse_size_mb(text, default_unit="mib") * 2**20)


def _divide(numerator: float, denominator: float) -> float | None:
    ok = math.isfinite(numerator) and math.isfinite(denominator) and denominator > 0
    return numerator / denominator if ok else None


# ------------------------------------------------------------------------------------------- store


@contextlib.contextmanager
def store_and_proxy(root: Path, options: CacheBenchOptions) -> Iterator[tuple[str, str]]:
    """A store with its data in ``root`` and the shaping proxy in front: (direct URL, shaped URL)."""
    from strato.storage import ShapingProxy, StoreServer

    with (
        StoreServer(root / "store") as store,
        ShapingProxy(
            store.url,
            latency_s=parse_duration(options.latency),
            jitter_s=parse_duration(options.jitter),
            bandwidth_bytes_per_s=parse_bandwidth(options.bandwidth, "--bandwidth"),
        ) as proxy,
    ):
        yield store.url, proxy.url


# ------------------------------------------------------------------------------------------- platform


def _cache_args(storage_url: str, mode: str, cache_size: str, consistency: str) -> list[str]:
    return [
        "--storage", storage_url, "--cache", mode, "--cache-size", cache_size,
        "--consistency", consistency, "--max-object", "512MiB",
    ]  # fmt: skip


def cache_server(
    root: Path, storage_url: str, mode: str, options: CacheBenchOptions, *, cache_size: str | None = None
) -> ServerProcess:
    """A lean server (fork spawn, ``fixed:<keepalive>``) with ``storage_url`` and cache ``mode``."""
    server = ServerProcess.for_backend(
        root,
        backend="lean",
        spawn="fork",
        policy=f"fixed:{options.keepalive}",
        sandbox=options.sandbox,
        extra=_cache_args(storage_url, mode, cache_size or options.cache_size, options.consistency),
    )
    server.describe = f"strato faas server (cache {mode})"
    return server


def deploy_apps(client: FaasClient, apps: Sequence[str], memory: str) -> None:
    for app in apps:
        client.deploy(
            app,
            directory=EXAMPLES_DIR / app,
            memory=memory,
            timeout="120s",
            concurrency=1,
            buckets=[BUCKETS[app]],
        )


def _cache_stats(client: FaasClient, app: str) -> dict[str, float]:
    """The app's cache counters; empty without a cache (``--cache off``) or before its first read."""
    storage = client.stats().get("storage") or {}
    stats = (storage.get("apps") or {}).get(app) or {}
    return {k: float(v) for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def _hit_ratio(after: dict[str, float], before: dict[str, float]) -> float | None:
    hits, misses = _delta(after, before, "hits"), _delta(after, before, "misses")
    return _divide(hits, hits + misses)


def _live_instances(client: FaasClient, app: str) -> int:
    return int(client.stats()["functions"].get(app, {}).get("instances", 0))


def _invoke(client: FaasClient, app: str, body: bytes) -> float:
    start = time.perf_counter()
    result = client.invoke(app, body)
    elapsed = time.perf_counter() - start
    if result.status != 200:
        raise StratoError(f"{app} answered {result.status}: {result.body[:300].decode(errors='replace')}")
    return elapsed


class _Run:
    def __init__(self, options: CacheBenchOptions, progress: Progress | None) -> None:
        self.options = options
        self.progress = progress

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def measure_app(self, server: ServerProcess, app: str, mode: str, requests: Requests) -> AppResult:
        options = self.options
        client = server.client(timeout_s=options.invoke_timeout_s)
        try:
            body, _ = requests.next(app)
            _invoke(client, app, body)  # the cache is empty: neither warm nor a reload
            before = _cache_stats(client, app)
            warm: list[float] = []
            read = 0
            for _ in range(options.warm):
                body, size = requests.next(app)
                warm.append(_invoke(client, app, body))
                read += size
            warm_ratio = _hit_ratio(_cache_stats(client, app), before)
            first_cold: list[float] = []
            after_reload: list[float] = []
            prewarm_bytes = reload_bytes = 0.0
            reload_hits = reload_lookups = 0.0
            for cycle in range(options.cycles):
                self.say(f"  {mode}/{app}: reload {cycle + 1}/{options.cycles}")
                client.unload(app)
                _wait_until(
                    lambda: _live_instances(client, app) == 0,
                    30.0,
                    f"{app} still had live instances 30 s after it was unloaded",
                )
                before = _cache_stats(client, app)
                for index in range(options.first):
                    body, size = requests.next(app)
                    elapsed = _invoke(client, app, body)
                    after_reload.append(elapsed)
                    if index == 0:
                        first_cold.append(elapsed)
                    reload_bytes += size
                after = _cache_stats(client, app)
                prewarm_bytes += _delta(after, before, "prewarm_hit_bytes")
                reload_hits += _delta(after, before, "hits")
                reload_lookups += _delta(after, before, "hits") + _delta(after, before, "misses")
            has_cache = mode != "off" and bool(_cache_stats(client, app))
            return AppResult(
                app=app,
                mode=mode,
                warm=Latency.of(warm),
                first_cold=Latency.of(first_cold),
                after_reload=Latency.of(after_reload),
                warm_hit_ratio=warm_ratio if has_cache else None,
                prewarm_share=_divide(prewarm_bytes, reload_bytes) if has_cache else None,
                reload_hit_ratio=_divide(reload_hits, reload_lookups) if has_cache else None,
                bytes_per_invocation=read / options.warm,
            )
        finally:
            client.close()

    def modes(self, root: Path, storage_url: str, seeded: Seeded) -> list[AppResult]:
        results = []
        for mode in self.options.modes:
            self.say(f"cache {mode}: starting the server")
            server = cache_server(root / f"serve-{mode}", storage_url, mode, self.options)
            # The same request sequence under every mode (the noreuse app reads the same objects, each
            # once per server).
            requests = Requests(seeded, self.options.workload.seed)
            with running_server(server, timeout_s=self.options.start_timeout_s):
                client = server.client(timeout_s=self.options.invoke_timeout_s)
                try:
                    deploy_apps(client, self.options.apps, self.options.memory)
                finally:
                    client.close()
                for app in self.options.apps:
                    self.say(f"cache {mode}: {app}")
                    results.append(self.measure_app(server, app, mode, requests))
        return results

    def ranged(self, root: Path, storage_url: str) -> list[RangedPoint]:
        options = self.options
        size = options.workload.big_bytes
        points = []
        for count in options.ranged_instances:
            self.say(f"ranged GET of {size / 2**20:g} MiB with {count} instance(s)")
            server = cache_server(root / f"ranged-{count}", storage_url, "faast", options)
            with running_server(server, timeout_s=options.start_timeout_s):
                client = server.client(timeout_s=options.invoke_timeout_s)
                try:
                    points.append(self._ranged_point(server, client, count, size))
                finally:
                    client.close()
        return points

    def _ranged_point(self, server: ServerProcess, client: FaasClient, count: int, size: int) -> RangedPoint:
        options = self.options
        client.deploy(
            "getter",
            files={"handler.py": GETTER_HANDLER},
            memory=options.memory,
            timeout="120s",
            concurrency=1,
            maxConcurrency=count,  # the instance limit: as many parallel ranges as instances
            buckets=[BIG_BUCKET],
        )
        body = json.dumps({"bucket": BIG_BUCKET, "key": BIG_KEY}).encode()
        timings = [self._get_big(client, body, size)]
        # Unloaded: the cache is gone, the history (the object's size) stays.
        client.unload("getter")
        _wait_until(
            lambda: _live_instances(client, "getter") == 0,
            30.0,
            "getter still had live instances after unload",
        )
        if count > 1:
            hold = json.dumps({"hold_s": 1.0}).encode()
            # Concurrent invocations, one per instance (concurrency 1): the platform starts ``count``.
            holders = [server.client(timeout_s=options.invoke_timeout_s) for _ in range(count)]
            try:
                with _threads(count) as pool:
                    list(pool.map(lambda c: c.invoke("getter", hold), holders))
            finally:
                for holder in holders:
                    holder.close()
        instances = _live_instances(client, "getter")
        for _ in range(2):
            timings.append(self._get_big(client, body, size))
        return RangedPoint(count, instances, timings[0], timings[1], timings[2], size)

    @staticmethod
    def _get_big(client: FaasClient, body: bytes, size: int) -> float:
        result = client.invoke("getter", body)
        if result.status != 200:
            raise StratoError(f"getter answered {result.status}: {result.body[:300]!r}")
        answer = json.loads(result.body)
        if answer["bytes"] != size:
            raise StratoError(f"getter read {answer['bytes']} bytes of a {size}-byte object")
        return float(answer["get_s"])

    def working_set(self, root: Path, storage_url: str, seeded: Seeded) -> list[WorkingSetPoint]:
        options = self.options
        shard = _bytes(options.working_set_shard)
        small = seeded.objects["small"]
        cumulative = np.cumsum([o.size for o in small])
        points = []
        for mode in [m for m in options.modes if m != "off"]:
            for multiple in options.working_set:
                wanted = multiple * shard
                among = int(np.searchsorted(cumulative, wanted) + 1)
                if among > len(small):
                    raise ConfigError(
                        f"a working set of {multiple:g} x {options.working_set_shard} needs more than the "
                        f"{len(small)} small objects seeded"
                    )
                self.say(f"working set {multiple:g} x {options.working_set_shard}, cache {mode}")
                server = cache_server(
                    root / f"ws-{mode}-{multiple:g}",
                    storage_url,
                    mode,
                    options,
                    cache_size=options.working_set_shard,
                )
                requests = Requests(seeded, options.workload.seed)
                with running_server(server, timeout_s=options.start_timeout_s):
                    client = server.client(timeout_s=options.invoke_timeout_s)
                    try:
                        deploy_apps(client, ["small"], options.memory)
                        # One pass over the working set first, so the sweep measures a warm cache.
                        for start in range(0, among, 8):
                            keys = [o.key for o in small[start : min(among, start + 8)]]
                            _invoke(
                                client,
                                "small",
                                json.dumps({"bucket": small[0].bucket, "keys": keys}).encode(),
                            )
                        before = _cache_stats(client, "small")
                        latencies = [
                            _invoke(client, "small", requests.next("small", among=among)[0])
                            for _ in range(options.working_set_invocations)
                        ]
                        ratio = _hit_ratio(_cache_stats(client, "small"), before)
                        points.append(
                            WorkingSetPoint(
                                mode,
                                int(cumulative[among - 1]),
                                shard,
                                ratio,
                                Latency.of(latencies),
                                _live_instances(client, "small"),
                            )
                        )
                    finally:
                        client.close()
        return points


@contextlib.contextmanager
def _threads(count: int) -> Iterator[Any]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=count) as pool:
        yield pool


# ------------------------------------------------------------------------------------------- judging


def reductions(results: Sequence[AppResult]) -> list[Reduction]:
    off = {r.app: r for r in results if r.mode == "off"}
    out = []
    for result in results:
        if result.mode == "off":
            continue
        base = off.get(result.app)
        warm = after = None
        if base is not None:
            ratio = _divide(result.warm.mean_s, base.warm.mean_s)
            warm = None if ratio is None else 1.0 - ratio
            ratio = _divide(result.after_reload.mean_s, base.after_reload.mean_s)
            after = None if ratio is None else 1.0 - ratio
        out.append(Reduction(result.app, result.mode, warm, after))
    return out


def judge(results: Sequence[AppResult], cuts: Sequence[Reduction]) -> list[Target]:
    faast = {c.app: c.warm for c in cuts if c.mode == "faast"}
    heavy = [faast[a] for a in DATA_HEAVY if faast.get(a) is not None]
    targets = []
    average = statistics.fmean(v for v in heavy if v is not None) if heavy else None
    best = max((v for v in heavy if v is not None), default=None)
    targets.append(
        Target(
            f"faast warm mean reduction, average over {len(heavy)} data-heavy app(s)",
            average,
            f">= {AVERAGE_TARGET:.0%}",
            None if average is None else average >= AVERAGE_TARGET,
        )
    )
    targets.append(
        Target(
            "faast warm mean reduction, best app",
            best,
            f">= {BEST_TARGET:.0%}",
            None if best is None else best >= BEST_TARGET,
        )
    )
    noreuse = faast.get("noreuse")
    slowdown = None if noreuse is None else -noreuse
    targets.append(
        Target(
            "noreuse slowdown with faast",
            slowdown,
            f"<= {NOREUSE_TARGET:.0%}",
            None if slowdown is None else slowdown <= NOREUSE_TARGET,
        )
    )
    by_key = {(r.app, r.mode): r for r in results}
    apps = [a for a in DATA_HEAVY if (a, "faast") in by_key and (a, "lru") in by_key]
    if apps:
        faster = [by_key[a, "faast"].after_reload.mean_s < by_key[a, "lru"].after_reload.mean_s for a in apps]
        shares = [by_key[a, "faast"].prewarm_share or 0.0 for a in apps]
        targets.append(
            Target(
                f"faast faster than lru after a reload ({sum(faster)}/{len(apps)} apps); mean pre-warm share",
                statistics.fmean(shares),
                "every app faster, share > 0",
                all(faster) and statistics.fmean(shares) > 0,
            )
        )
    return targets


# ------------------------------------------------------------------------------------------- entry


@contextlib.contextmanager
def _stop_cleanly_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the bench as Ctrl-C does: the servers, the store and the proxy it started are
    stopped on the way out (by default SIGTERM would leave them running)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cache_bench(
    options: CacheBenchOptions | None = None,
    *,
    progress: Progress | None = None,
    root: Path | None = None,
) -> CacheBenchReport:
    """The whole bench; ``root`` keeps the servers' logs and the store's data (a temporary directory
    otherwise)."""
    options = options or CacheBenchOptions()
    if options.ranged_instances and options.workload.big_bytes == 0:
        options = replace(options, workload=replace(options.workload, big_bytes=_bytes(options.ranged_size)))
    apps = list(options.apps)
    if "noreuse" in apps and options.workload.noreuse_objects < options.noreuse_needed:
        options = replace(options, workload=replace(options.workload, noreuse_objects=options.noreuse_needed))
    if options.working_set and "small" not in apps:
        apps.append("small")
    run = _Run(options, progress)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_stop_cleanly_on_sigterm())
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="strato-faast-bench-")))
        direct, shaped = stack.enter_context(store_and_proxy(root, options))
        run.say(f"seeding the store ({', '.join(apps)})")
        seeded = seed_store(direct, options.workload, apps)
        results = run.modes(root, shaped, seeded)
        ranged = run.ranged(root, shaped) if options.ranged_instances else []
        sweep = run.working_set(root, shaped, seeded) if options.working_set else []
    cuts = reductions(results)
    warnings = []
    if options.consistency == "strong" and set(options.modes) - {"off"}:
        warnings.append(
            "strong consistency: every cache hit is validated with a conditional GET (one round trip "
            "through the proxy), which small objects pay in full"
        )
    return CacheBenchReport(
        options=_options_json(options),
        machine=machine_info(),
        seeded_bytes={app: sum(o.size for o in objs) for app, objs in seeded.objects.items()},
        results=results,
        reductions=cuts,
        targets=judge(results, cuts),
        ranged=ranged,
        working_set=sweep,
        warnings=warnings,
    )


def _options_json(options: CacheBenchOptions) -> dict[str, Any]:
    data = asdict(options)
    data["workload"] = asdict(options.workload)
    return data
