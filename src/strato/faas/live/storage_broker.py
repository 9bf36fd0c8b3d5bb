"""The node's storage broker: handlers' storage calls, each application's Faa$T cache, pre-warm, scale-out.

Instances have no network, so a handler's ``context.storage`` call arrives here as a STORAGE frame
(``storage_client.py``). The broker checks it (it comes from code the platform does not trust), serves it
from the function's cache or the object store, and answers with a STORAGE_REPLY.

The cache of an application (a deployed function) has one shard per live instance, created when the
instance is created and dropped when it stops, so keep-alive unloading the function unloads its cache too,
as in Faa$T. Objects are spread over the shards by consistent hashing, so a read on one instance is served
from another instance's shard through the platform, never from the store twice. The shards' bytes are held
by the node on the instances' behalf (docs/faast.md says why and what that changes). Every decision (index,
eviction, ring, history, pre-warm plan, working set) is ``strato.faas.cache``'s, the same objects the cache
simulator drives.

Modes (``--cache``): ``off`` (every read goes to the store), ``lru`` (the cache, no pre-warm, no
scale-out, no striping: the baseline the paper compares against) and ``faast`` (pre-warm from the access
history on reload, scale-out when the working set outgrows the shards, ranged parallel fetches of large
objects). Consistency: ``strong`` validates every cached object with a conditional GET (If-None-Match) before
serving it; ``relaxed[:TTL]`` skips that for TTL after the object was fetched or validated.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from strato.core.units import parse_duration
from strato.errors import ConfigError
from strato.faas.cache.appcache import AppCache, CacheStats, object_key, split_object_key
from strato.faas.cache.history import AccessHistory
from strato.faas.cache.scaling import instances_for_working_set, ranged_parts
from strato.faas.live.registry import BUCKET_PATTERN
from strato.storage import CorruptObject, Fetched, ObjectNotFound, ObjectStore, StorageError, StoreUnavailable

if TYPE_CHECKING:
    from strato.faas.live.instances import Instance

CacheMode = Literal["off", "lru", "faast"]
MAX_KEY_BYTES = 1024
"""S3's limit on a key's length (UTF-8)."""
KEY_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")
"""Control characters: legal in S3 keys, but they end up in logs and paths; refused."""
VERIFY_IN_THREAD_ABOVE = 1 << 20
WORKING_SET_EVERY_S = 1.0
CORRUPT_RETRIES = 3
CORRUPT_BACKOFF_S = 0.02
"""Pause before the n-th re-read of a torn or corrupt object: n times this (a write in progress ends)."""
EARLY_ABOVE = 256 * 1024
"""A cached object at least this large goes to the instance while it is being validated (strong
consistency): copying it costs about as much as the validation's round trip, so the two overlap."""
MAX_CALLS_PER_INSTANCE = 64
TOO_MANY_CALLS = (
    b'{"status":"error","error":"invalid","message":"too much storage in progress from this instance '
    b'(64 calls, or twice --max-object in data not yet taken)"}'
)


def parse_cache_mode(value: str) -> CacheMode:
    if value not in ("off", "lru", "faast"):
        raise ConfigError(f"--cache must be off, lru or faast, not {value!r}")
    return value  # type: ignore[return-value]


def parse_consistency(value: str) -> float:
    """Seconds a cached object is served without validation: 0 for ``strong``, the TTL of
    ``relaxed:TTL``, infinity for ``relaxed``."""
    name, _, ttl = value.partition(":")
    if name == "strong" and not ttl:
        return 0.0
    if name == "relaxed":
        if not ttl:
            return math.inf
        seconds = parse_duration(ttl, default_unit="")
        if seconds <= 0:
            raise ConfigError(f"the relaxed consistency TTL must be positive, not {ttl!r}")
        return seconds
    raise ConfigError(
        f"--consistency must be strong, relaxed or relaxed:TTL (e.g. relaxed:5s), not {value!r}"
    )


@dataclass(frozen=True)
class StorageConfig:
    url: str
    """The object store, e.g. ``s3://127.0.0.1:8333`` (usually the shaping proxy in front of it)."""
    cache: CacheMode = "off"
    shard_bytes: int = 256 << 20
    """Cache capacity each live instance of an application brings."""
    validate_after_s: float = 0.0
    """0: strong consistency (validate every hit); else relaxed for this long (inf: never validate)."""
    max_object: int = 512 << 20
    """Largest object a handler may read or write through the platform."""
    stripe_bytes: int = 16 << 20
    """faast: an object larger than this is fetched in ranges over parallel connections, one per instance
    the application may have (the paper's scaling for I/O bandwidth)."""
    prewarm_parallel: int = 8
    working_set_window_s: float = 300.0
    store_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        parse_cache_mode(self.cache)
        if self.shard_bytes <= 0 or self.max_object <= 0 or self.stripe_bytes <= 0:
            raise ConfigError("cache, object and stripe sizes must be positive")


class _Call:
    """One storage call being answered: where its replies go, and the payload sent ahead of validation."""

    __slots__ = ("call_id", "early", "instance")

    def __init__(self, instance: Instance, call_id: int) -> None:
        self.instance = instance
        self.call_id = call_id
        self.early: bytes | None = None

    def send_early(self, etag: str, size: int, payload: bytes) -> None:
        """Send a cached object before it is validated (the copy overlaps the conditional GET); the
        instance uses it only once the final reply confirms it."""
        channel = self.instance.channel
        if channel is None or channel.closed:
            return
        meta = json.dumps({"status": "ok", "tentative": True, "etag": etag, "size": size}).encode()
        channel.reply(self.call_id, meta, payload)
        self.early = payload


class _FetchMissed(Exception):
    """A read others waited for (an invocation's or the pre-warm's) failed or was cut off: each of them
    reads the object itself."""


class _Refused(Exception):
    """A storage call refused before it reached the store: (error kind, message)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _AppState:
    name: str
    cache: AppCache | None
    history: AccessHistory
    fetching: dict[str, asyncio.Future[Fetched]]
    validated_at: dict[str, float]
    prewarming: set[str]
    """Objects whose read in ``fetching`` is the pre-warm's."""
    reloads: int = 0
    writes: int = 0
    """Puts and deletes through the platform so far: a read that overlapped one does not cache what it
    brought (it may be older than the write)."""
    working_set_checked: float = -math.inf
    prewarm_task: asyncio.Task[None] | None = None


class StorageBroker:
    """Storage for one node's instances (one per node, on its event loop)."""

    def __init__(
        self,
        config: StorageConfig,
        store: ObjectStore,
        history_dir: Path,
        *,
        grow: Callable[[str, int], int],
        max_instances: Callable[[str], int],
    ) -> None:
        self.config = config
        self.store = store
        self.history_dir = history_dir
        self.grow = grow
        """Ask the node for more instances of a function (returns how many it started)."""
        self.max_instances = max_instances
        self.apps: dict[str, _AppState] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.calls = 0
        self.refused = 0
        self.store_errors = 0
        self.corrupt_reads = 0
        self.resent_reads = 0
        self.running: dict[str, tuple[int, int]] = {}
        """Storage calls in progress per instance, and the bytes of the puts among them."""

    # ---- application and instance lifecycle ----------------------------------------------------

    def _app(self, name: str) -> _AppState:
        state = self.apps.get(name)
        if state is None:
            cache = AppCache(self.config.shard_bytes, policy="lru") if self.config.cache != "off" else None
            state = self.apps[name] = _AppState(name, cache, self._load_history(name), {}, {}, set())
        return state

    def instance_created(self, instance: Instance) -> None:
        """An instance is starting: its shard joins the ring now, so a pre-warm runs beside start-up."""
        state = self._app(instance.function.spec.name)
        if state.cache is None:
            return
        reload = not state.cache.shards
        state.cache.add_shard(instance.id)
        if reload:
            state.reloads += 1
            if self.config.cache == "faast":
                self._spawn(self._prewarm(instance.function.spec.name, state))

    def instance_stopped(self, instance: Instance) -> None:
        """An instance stopped (keep-alive unload, eviction, crash): its shard and objects go with it;
        with the last one the application's access history is persisted for its next load."""
        name = instance.function.spec.name
        state = self.apps.get(name)
        if state is None or state.cache is None or instance.id not in state.cache.shards:
            return
        state.cache.remove_shard(instance.id)
        if not state.cache.shards:
            if state.prewarm_task is not None:
                state.prewarm_task.cancel()
            self._save_history(name, state.history)

    def forget(self, name: str) -> None:
        """The function was removed: its cache and history go (a new function of the name starts fresh)."""
        state = self.apps.pop(name, None)
        if state is not None and state.prewarm_task is not None:
            state.prewarm_task.cancel()
        self._history_path(name).unlink(missing_ok=True)

    def _history_path(self, name: str) -> Path:
        return self.history_dir / f"{name}.json"

    def _load_history(self, name: str) -> AccessHistory:
        path = self._history_path(name)
        try:
            return AccessHistory.from_json(path.read_text())
        except FileNotFoundError:
            return AccessHistory()
        except (OSError, ValueError, KeyError, TypeError):
            # A damaged history costs a cold cache, not the function.
            return AccessHistory()

    def _save_history(self, name: str, history: AccessHistory) -> None:
        self.history_dir.mkdir(parents=True, exist_ok=True)
        temporary = self._history_path(name).with_suffix(".tmp")
        temporary.write_text(history.to_json())
        temporary.replace(self._history_path(name))

    async def _prewarm(self, name: str, state: _AppState) -> None:
        """Fetch the most valuable objects of the access history that fit, in parallel with start-up."""
        cache = state.cache
        assert cache is not None
        capacity = cache.shard_capacity_bytes * len(cache.shards)
        plan = state.history.prewarm_plan(capacity, time.time())
        if not plan:
            return
        limit = asyncio.Semaphore(self.config.prewarm_parallel)

        async def one(item: str) -> None:
            async with limit:
                if item in cache or item in state.fetching or not cache.shards:
                    return
                # Registered as the object's fetch in progress: an invocation that wants it meanwhile
                # waits for this read instead of starting its own.
                future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
                state.fetching[item] = future
                state.prewarming.add(item)
                try:
                    fetched = await self._fetch(state, *split_object_key(item))
                    if cache.shards and item not in cache:
                        cache.insert(item, fetched.etag, fetched.size, fetched.data, prewarm=True)
                        self._validated(state, item)
                    future.set_result(fetched)
                except BaseException as error:
                    # A pre-warm is a bet: a failed one leaves the object cold, and whoever waited for it
                    # reads it from the store.
                    future.set_exception(_FetchMissed(str(error) or type(error).__name__))
                    future.exception()
                    if not isinstance(error, (StorageError, _Refused)):
                        raise
                finally:
                    state.prewarming.discard(item)
                    if state.fetching.get(item) is future:
                        del state.fetching[item]

        task = asyncio.current_task()
        state.prewarm_task = task
        try:
            await asyncio.gather(*(one(key) for key, _ in plan))
        finally:
            if state.prewarm_task is task:
                state.prewarm_task = None

    # ---- calls -----------------------------------------------------------------------------------

    def call(self, instance: Instance, call_id: int, meta: bytes, body: bytes) -> None:
        """A STORAGE frame from ``instance``: answered when done (calls of one instance may overlap, up
        to MAX_CALLS_PER_INSTANCE; more are refused at once rather than queued without bound)."""
        self.calls += 1
        count, held = self.running.get(instance.id, (0, 0))
        channel = instance.channel
        unread = channel.unread_bytes() if channel is not None else 0
        if count >= MAX_CALLS_PER_INSTANCE or held + len(body) + unread > 2 * self.config.max_object:
            # An instance that sends calls faster than it takes their answers, or holds many large puts
            # at once, is refused here rather than let the node's memory grow with what it asks.
            self.refused += 1
            if channel is not None:
                channel.reply(call_id, TOO_MANY_CALLS, b"")
            return
        self.running[instance.id] = (count + 1, held + len(body))
        self._spawn(self._answer(instance, call_id, meta, body))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, instance: Instance, call_id: int, meta: bytes, body: bytes) -> None:
        reply: dict[str, Any]
        data = b""
        call = _Call(instance, call_id)
        # Past the function's own timeout nobody waits for the answer (the node answers 504 and stops the
        # instance): the call ends a little before, so the handler can still say why.
        deadline = min(self.config.store_timeout_s, max(instance.spec.timeout_s - 0.5, 0.1))
        try:
            request = self._checked(instance, meta, body)
            reply, data = await asyncio.wait_for(self._serve(call, request, body), deadline)
            reply["status"] = "ok"
            if call.early is not None and data is call.early:
                reply, data = {"status": "ok", "confirmed": True}, b""
        except _Refused as refused:
            self.refused += 1
            reply = {"status": "error", "error": refused.kind, "message": str(refused)}
        except ObjectNotFound as error:
            reply = {"status": "error", "error": "not_found", "message": str(error)}
        except (StoreUnavailable, CorruptObject, TimeoutError) as error:
            self.store_errors += 1
            message = str(error) or f"the object store did not answer within {deadline:g} s"
            reply = {"status": "error", "error": "unavailable", "message": message}
        except StorageError as error:
            # The store refused the request (a 4xx other than 404: a key it cannot hold, ...).
            self.store_errors += 1
            reply = {"status": "error", "error": "invalid", "message": str(error)}
        except Exception as error:  # a bug here must still answer: the handler would wait forever
            self.store_errors += 1
            reply = {"status": "error", "error": "unavailable", "message": f"storage broker error: {error!r}"}
        finally:
            count, held = self.running.get(instance.id, (1, 0))
            if count > 1:
                self.running[instance.id] = (count - 1, held - len(body))
            else:
                self.running.pop(instance.id, None)
        channel = instance.channel
        if channel is not None and not channel.closed:
            channel.reply(call_id, json.dumps(reply, separators=(",", ":")).encode(), data)

    def _checked(self, instance: Instance, meta: bytes, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(meta)
        except (ValueError, RecursionError):
            raise _Refused("invalid", "unreadable storage call") from None
        if not isinstance(request, dict):
            raise _Refused("invalid", "a storage call must be a JSON object")
        op = request.get("op")
        if op not in ("get", "range", "head", "put", "delete", "list"):
            raise _Refused("invalid", f"unknown storage operation {op!r}")
        bucket = request.get("bucket")
        if not isinstance(bucket, str) or not BUCKET_PATTERN.fullmatch(bucket):
            raise _Refused("invalid", f"{bucket!r} is not a bucket name (3-63 of a-z 0-9 . -)")
        allowed = instance.spec.buckets
        if "*" not in allowed and bucket not in allowed:
            raise _Refused(
                "denied",
                f"function {instance.spec.name!r} may not use bucket {bucket!r} "
                f"(deploy it with --bucket {bucket})",
            )
        if op == "list":
            prefix = request.get("prefix", "")
            if not isinstance(prefix, str) or len(prefix.encode()) > MAX_KEY_BYTES:
                raise _Refused("invalid", "the prefix must be a string of at most 1024 bytes")
        else:
            key = request.get("key")
            if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
                raise _Refused("invalid", "a key must be a non-empty string of at most 1024 bytes (UTF-8)")
            if KEY_FORBIDDEN.search(key):
                raise _Refused("invalid", f"key {key!r} holds control characters")
        if op == "range":
            start, end = request.get("start"), request.get("end")
            if (
                not isinstance(start, int)
                or not isinstance(end, int)
                or isinstance(start, bool)
                or isinstance(end, bool)
                or not 0 <= start < end
            ):
                raise _Refused("invalid", "a range needs integers 0 <= start < end")
            if end - start > self.config.max_object:
                raise _Refused("invalid", f"a range may span at most {self.config.max_object} bytes")
        if op != "put" and body:
            raise _Refused("invalid", f"a {op} carries no data")
        return request

    async def _serve(self, call: _Call, request: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        name, reader = call.instance.function.spec.name, call.instance.id
        op, bucket = request["op"], request["bucket"]
        if op == "list":
            listed = await self.store.list(bucket, request.get("prefix", ""))
            rows = [[meta.key, meta.size, meta.etag] for meta in listed]
            return {"count": len(rows)}, json.dumps(rows).encode()
        key = request["key"]
        state = self._app(name)
        item = object_key(bucket, key)
        if op == "get":
            fetched, source = await self._get(state, bucket, key, reader, call)
            return {"etag": fetched.etag, "size": fetched.size, "source": source}, fetched.data
        if op == "range":
            return await self._range(state, bucket, key, reader, request["start"], request["end"])
        if op == "head":
            meta = await self.store.head(bucket, key)
            return {"etag": meta.etag, "size": meta.size}, b""
        if op == "put":
            state.writes += 1
            written = await self.store.put(bucket, key, body)
            state.writes += 1
            if state.cache is not None:
                # Write-through: the new version is what the next read on any instance sees.
                state.cache.insert(item, written.etag, len(body), body)
                self._validated(state, item)
            return {"etag": written.etag, "size": len(body)}, b""
        state.writes += 1
        await self.store.delete(bucket, key)
        state.writes += 1
        if state.cache is not None:
            state.cache.invalidate(item)
            state.validated_at.pop(item, None)
        return {}, b""

    # ---- reads -----------------------------------------------------------------------------------

    async def _get(
        self, state: _AppState, bucket: str, key: str, reader: str, call: _Call | None = None
    ) -> tuple[Fetched, str]:
        item = object_key(bucket, key)
        cache = state.cache
        if cache is None:
            fetched = await self._store_get(bucket, key)
            assert fetched is not None
            return fetched, "store"
        entry = cache.lookup(item, from_shard=reader)
        if entry is not None:
            self._touched(state, item, entry.size)
            now = time.monotonic()
            if now - state.validated_at.get(item, -math.inf) < self.config.validate_after_s:
                return Fetched(entry.payload, entry.etag, entry.size), "cache"
            if call is not None and entry.size >= EARLY_ABOVE:
                call.send_early(entry.etag, entry.size, entry.payload)
            try:
                changed = await self._store_get(bucket, key, if_none_match=entry.etag)
            except ObjectNotFound:
                # Deleted behind the cache: the copy goes, and so does the hit it was counted as.
                cache.record_validation(item if cache.peek(item) is entry else "", changed=True)
                state.validated_at.pop(item, None)
                raise
            if changed is None:
                cache.record_validation(item, changed=False)
                if cache.peek(item) is entry:
                    self._validated(state, item)
                return Fetched(entry.payload, entry.etag, entry.size), "cache"
            # Written behind the cache (by another app or directly on the store): never served stale.
            # Counted against this entry only while it is still the cached one (a write meanwhile may
            # have put a newer version there, which must stay).
            cache.record_validation(item if cache.peek(item) is entry else "", changed=True)
            cache.record_miss(item, changed.size)
            await self._admit(state, item, changed)
            return changed, "store"
        pending = state.fetching.get(item)
        if pending is not None:
            # Another invocation, or the pre-warm, is already reading it: one store read serves both.
            prewarm = item in state.prewarming
            try:
                fetched = await asyncio.shield(pending)
            except (_FetchMissed, StorageError):
                # The read this one waited for failed or was cut off: this one reads for itself.
                return await self._get(state, bucket, key, reader, call)
            if self.config.validate_after_s == 0:
                # That read went out before this one began: a write that completed in between must be
                # seen, so the version it brought is validated like a cached copy.
                newer = await self._store_get(bucket, key, if_none_match=fetched.etag)
                if newer is not None:
                    cache.record_miss(item, newer.size)
                    self._touched(state, item, newer.size)
                    return newer, "store"
            entry = cache.lookup(item, from_shard=reader) if prewarm else None
            if entry is not None and entry.etag == fetched.etag:
                # The pre-warm's copy (counted as the hit on a pre-warmed object it is).
                self._touched(state, item, entry.size)
                return Fetched(entry.payload, entry.etag, entry.size), "cache"
            cache.record_miss(item, fetched.size)
            self._touched(state, item, fetched.size)
            return fetched, "store"
        future: asyncio.Future[Fetched] = asyncio.get_running_loop().create_future()
        state.fetching[item] = future
        writes = state.writes
        try:
            fetched = await self._fetch(state, bucket, key)
            cache.record_miss(item, fetched.size)
            self._touched(state, item, fetched.size)
            if state.writes == writes:
                # (A write by this application meanwhile may be newer: then this version is not cached.)
                await self._admit(state, item, fetched)
            future.set_result(fetched)
        except BaseException as error:
            # Waiters read for themselves, whatever ended this read (an error, this call's deadline).
            future.set_exception(_FetchMissed(str(error) or type(error).__name__))
            future.exception()  # retrieved here: nobody may be waiting
            raise
        finally:
            state.fetching.pop(item, None)
        return fetched, "store"

    @staticmethod
    def _validated(state: _AppState, item: str) -> None:
        """Note when ``item``'s cached copy was last known current; entries of objects no longer cached
        are dropped once they outnumber the cached ones (a function writing unique keys must not grow
        this without bound)."""
        validated = state.validated_at
        validated[item] = time.monotonic()
        cache = state.cache
        if cache is not None and len(validated) > 2 * len(cache) + 1024:
            state.validated_at = {key: at for key, at in validated.items() if key in cache}

    def _touched(self, state: _AppState, item: str, size: int) -> None:
        state.history.record(item, size, time.time())

    async def _admit(self, state: _AppState, item: str, fetched: Fetched) -> None:
        cache = state.cache
        assert cache is not None
        if not cache.shards:
            return  # the application unloaded while the object was coming
        cache.insert(item, fetched.etag, fetched.size, fetched.data)
        self._validated(state, item)
        if self.config.cache == "faast":
            self._scale_for_working_set(state, cache)

    def _scale_for_working_set(self, state: _AppState, cache: AppCache) -> None:
        now = time.monotonic()
        if now - state.working_set_checked < WORKING_SET_EVERY_S:
            return  # the working set is a sum over the history: at most once a second
        state.working_set_checked = now
        name = state.name
        # Objects read again and small enough for a shard: what more shards would turn into hits (an app
        # that never re-reads, or reads only huge objects, gains nothing from more instances).
        working_set = state.history.working_set_bytes(
            time.time(), self.config.working_set_window_s, min_accesses=2, max_size=self.config.shard_bytes
        )
        wanted = instances_for_working_set(working_set, self.config.shard_bytes, self.max_instances(name))
        missing = wanted - len(cache.shards)
        if missing > 0:
            self.grow(name, missing)

    async def _fetch(self, state: _AppState, bucket: str, key: str) -> Fetched:
        """A whole object from the store. faast reads an object its history knows to be large in ranges
        over parallel connections, one per instance the application may have (an unknown object is read
        whole: learning its size first would cost every first read a round trip)."""
        known = state.history.size_of(object_key(bucket, key)) if self.config.cache == "faast" else None
        stripe = self.config.stripe_bytes
        if known is None or known <= stripe:
            fetched = await self._store_get(bucket, key)
            assert fetched is not None
            return fetched
        name = state.name
        lanes = max(1, min(self.max_instances(name), math.ceil(known / stripe)))
        if state.cache is not None and lanes > len(state.cache.shards):
            self.grow(name, lanes - len(state.cache.shards))
        bounds = ranged_parts(known, lanes)
        parts = await asyncio.gather(*(self._store_get(bucket, key, bound) for bound in bounds))
        size, etag = parts[0].size if parts[0] else 0, parts[0].etag if parts[0] else ""
        if size != known:
            # It changed size since the history saw it: read it whole, as an unknown object.
            fetched = await self._store_get(bucket, key)
            assert fetched is not None
            return fetched
        for part in parts:
            assert part is not None
            if part.etag != etag:
                raise CorruptObject(f"{bucket}/{key} changed while it was read in ranges; read it again")
        whole = Fetched(b"".join([part.data for part in parts if part]), etag, size)
        # The store client checks a whole object's MD5 against its ETag; one put together from ranges
        # is checked here.
        await _verify(whole, object_key(bucket, key))
        return whole

    async def _range(
        self, state: _AppState, bucket: str, key: str, reader: str, start: int, end: int
    ) -> tuple[dict[str, Any], bytes]:
        cache = state.cache
        if cache is not None and object_key(bucket, key) in cache:
            fetched, source = await self._get(state, bucket, key, reader)
            return {"etag": fetched.etag, "size": fetched.size, "source": source}, fetched.data[start:end]
        # A range of an object not cached is read from the store alone (the object is not cached whole
        # for it: open() on a large object would otherwise fetch all of it on the first read).
        part = await self._store_get(bucket, key, (start, end))
        assert part is not None
        return {"etag": part.etag, "size": part.size, "source": "store"}, part.data

    async def _store_get(
        self,
        bucket: str,
        key: str,
        byte_range: tuple[int, int] | None = None,
        *,
        if_none_match: str | None = None,
    ) -> Fetched | None:
        resent = False
        attempt = 0
        while True:
            try:
                fetched = await self.store.get(
                    bucket, key, byte_range=byte_range, if_none_match=if_none_match
                )
                break
            except StoreUnavailable:
                # A read is idempotent: one more try covers a kept-alive connection the store closed as
                # the request went out; a store that is down refuses both at once.
                if resent:
                    raise
                resent = True
                self.resent_reads += 1
            except CorruptObject:
                # A body that broke off or does not match its ETag (a read racing a write on a store
                # that does not swap objects atomically, a cut connection): read again, then give up.
                self.corrupt_reads += 1
                if attempt == CORRUPT_RETRIES:
                    raise
                attempt += 1
                await asyncio.sleep(CORRUPT_BACKOFF_S * attempt)
        if fetched is not None and byte_range is None and fetched.size > self.config.max_object:
            raise _Refused(
                "invalid", f"{bucket}/{key} is {fetched.size} bytes; the limit is {self.config.max_object}"
            )
        return fetched

    # ---- reporting -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        apps: dict[str, Any] = {}
        for name, state in sorted(self.apps.items()):
            row: dict[str, Any] = {"reloads": state.reloads}
            if state.cache is not None:
                row.update(state.cache.stats().to_json())
                row["shards"] = len(state.cache.shards)
            apps[name] = row
        return {
            "url": self.config.url,
            "cache": self.config.cache,
            "consistency": "strong"
            if self.config.validate_after_s == 0
            else f"relaxed:{self.config.validate_after_s:g}s",
            "shard_bytes": self.config.shard_bytes,
            "calls": self.calls,
            "refused": self.refused,
            "store_errors": self.store_errors,
            "corrupt_reads": self.corrupt_reads,
            "resent_reads": self.resent_reads,
            "apps": apps,
        }

    def app_stats(self) -> dict[str, CacheStats]:
        return {name: s.cache.stats() for name, s in self.apps.items() if s.cache is not None}

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.store.close()


async def _verify(fetched: Fetched, item: str) -> None:
    """An object put together from ranged reads, checked against its length and, when the ETag is an MD5
    of the content (single-part uploads), against that."""
    if len(fetched.data) != fetched.size:
        raise CorruptObject(f"{item}: {len(fetched.data)} bytes arrived of {fetched.size}")
    etag = fetched.etag.strip('"')
    if len(etag) != 32 or not all(c in "0123456789abcdef" for c in etag.lower()):
        return
    if len(fetched.data) > VERIFY_IN_THREAD_ABOVE:
        digest = await asyncio.to_thread(lambda: hashlib.md5(fetched.data, usedforsecurity=False).hexdigest())
    else:
        digest = hashlib.md5(fetched.data, usedforsecurity=False).hexdigest()
    if digest != etag.lower():
        raise CorruptObject(f"{item}: content does not match its ETag {etag} (corrupt in transit?)")


def frame_limit(config: StorageConfig | None) -> int:
    """The largest STORAGE frame body (a put) an instance may send."""
    return config.max_object if config is not None else 0
