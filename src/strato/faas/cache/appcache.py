"""One application's cache: shards (one per live instance), consistent hashing, eviction, counters.

Pure bookkeeping, no I/O and no locks: the live storage broker (one asyncio thread) holds payload bytes
in the entries, the simulator holds ``None``. Keys are strings ``"bucket/key"`` (:func:`object_key`):
S3 bucket names cannot contain ``/``, so the first ``/`` splits them back (:func:`split_object_key`),
they hash and persist (JSON) as they are, and the simulator uses a trace's object names directly.

Counting rules (what :class:`CacheStats` means):

- :meth:`AppCache.lookup` counts a hit (and its bytes) when the key is cached; a miss is counted by
  :meth:`AppCache.record_miss` once the caller knows the object's size (it fetched it from the store).
- With strong consistency the caller validates a hit against the store and reports it with
  :meth:`AppCache.record_validation`; a changed object turns that hit back into a miss (and is dropped),
  so ``hits / (hits + misses)`` is always the share of reads served from cache.
- ``prewarm_hits`` counts first hits on entries inserted with ``prewarm=True``: misses the pre-warm saved.
- ``unload_drops`` counts objects (not unloads) dropped with a removed shard.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from strato.errors import ConfigError
from strato.faas.cache.policies import EvictionPolicy, check_policy, make_policy
from strato.faas.cache.ring import DEFAULT_VNODES, HashRing


def object_key(bucket: str, key: str) -> str:
    return f"{bucket}/{key}"


def split_object_key(cache_key: str) -> tuple[str, str]:
    bucket, _, key = cache_key.partition("/")
    return bucket, key


class Entry:
    """One cached object. Mutable: ``hits`` and ``last_access`` change on every lookup."""

    __slots__ = ("etag", "hits", "key", "last_access", "payload", "prewarmed", "shard", "size")

    def __init__(
        self, key: str, shard: str, etag: str, size: int, payload: Any, prewarmed: bool, now: float
    ) -> None:
        self.key = key
        self.shard = shard
        self.etag = etag
        self.size = size
        self.payload = payload
        self.prewarmed = prewarmed
        self.last_access = now
        self.hits = 0

    def __repr__(self) -> str:
        return f"Entry({self.key!r}, shard={self.shard!r}, size={self.size}, hits={self.hits})"


@dataclass(frozen=True, slots=True)
class Inserted:
    shard: str
    evicted: tuple[str, ...]  # keys evicted from that shard to make room, oldest decision first


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # one line: the object is larger than one shard, or the app has no shard


@dataclass(frozen=True, slots=True)
class Dropped:
    entries: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    validations: int
    stale_validations: int
    bytes_from_cache: int
    bytes_from_store: int
    prewarm_inserts: int
    prewarm_hits: int
    prewarm_hit_bytes: int
    evictions: int
    evicted_bytes: int
    unload_drops: int
    unload_dropped_bytes: int
    peer_hits: int
    used_bytes: int
    capacity_bytes: int
    objects: int

    @property
    def hit_ratio(self) -> float:
        reads = self.hits + self.misses
        return self.hits / reads if reads else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "hit_ratio": self.hit_ratio}


class _Shard:
    __slots__ = ("entries", "inserted", "policy", "used")

    def __init__(self, shard_id: str, policy: EvictionPolicy) -> None:
        self.entries: dict[str, Entry] = {}
        self.policy = policy
        self.used = 0
        # Most inserts evict nothing: one shared answer saves building a frozen dataclass each time.
        self.inserted = Inserted(shard_id, ())


class AppCache:
    """An application's cache over its shards. ``policy`` names an eviction policy
    (:func:`strato.faas.cache.policies.policy_names`); ``clock`` stamps ``last_access`` when a call
    passes no ``now``."""

    def __init__(
        self,
        shard_capacity_bytes: int,
        policy: str = "lru",
        ring_vnodes: int = DEFAULT_VNODES,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if shard_capacity_bytes <= 0:
            raise ConfigError(f"a cache shard needs a positive capacity, got {shard_capacity_bytes} bytes")
        self.shard_capacity_bytes = int(shard_capacity_bytes)
        self.policy = check_policy(policy)
        self._clock = clock
        self._ring = HashRing(ring_vnodes)
        self._shards: dict[str, _Shard] = {}
        self._index: dict[str, Entry] = {}
        # The only shard, while there is exactly one: skips hashing on every insert.
        self._single: str | None = None
        self.hits = 0
        self.misses = 0
        self.validations = 0
        self.stale_validations = 0
        self.bytes_from_cache = 0
        self.bytes_from_store = 0
        self.prewarm_inserts = 0
        self.prewarm_hits = 0
        self.prewarm_hit_bytes = 0
        self.evictions = 0
        self.evicted_bytes = 0
        self.unload_drops = 0
        self.unload_dropped_bytes = 0
        self.peer_hits = 0

    # --- shards -------------------------------------------------------------------------------------
    @property
    def shards(self) -> tuple[str, ...]:
        return tuple(self._shards)

    def add_shard(self, shard_id: str) -> None:
        """A new instance's share of the cache. Cached objects stay where they are; new inserts follow
        the ring (so about 1/n of future inserts go to the new shard)."""
        if shard_id in self._shards:
            return
        self._shards[shard_id] = _Shard(shard_id, make_policy(self.policy))
        self._ring.add(shard_id)
        self._single = shard_id if len(self._shards) == 1 else None

    def remove_shard(self, shard_id: str) -> Dropped:
        """The instance unloaded: its objects are gone (counted in ``unload_drops``)."""
        shard = self._shards.pop(shard_id, None)
        if shard is None:
            return Dropped(0, 0)
        self._ring.remove(shard_id)
        self._single = next(iter(self._shards)) if len(self._shards) == 1 else None
        for key in shard.entries:
            del self._index[key]
        dropped = Dropped(len(shard.entries), shard.used)
        self.unload_drops += dropped.entries
        self.unload_dropped_bytes += dropped.bytes
        return dropped

    def owner(self, key: str) -> str | None:
        """The shard a new copy of ``key`` goes to; None when the app has no shard."""
        return self._single if self._single is not None else self._ring.owner(key)

    # --- reads --------------------------------------------------------------------------------------
    def peek(self, key: str) -> Entry | None:
        """The entry without counting or touching it."""
        return self._index.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, key: str, *, now: float | None = None, from_shard: str | None = None) -> Entry | None:
        """The cached entry (a hit: counted, touched for eviction) or None (not counted: call
        :meth:`record_miss` with the size fetched). ``from_shard``: the reading instance's shard; a hit
        held by another shard counts as a peer hit."""
        entry = self._index.get(key)
        if entry is None:
            return None
        size = entry.size
        self._shards[entry.shard].policy.touch(key, size)
        self.hits += 1
        self.bytes_from_cache += size
        if entry.prewarmed and entry.hits == 0:
            self.prewarm_hits += 1
            self.prewarm_hit_bytes += size
        if from_shard is not None and entry.shard != from_shard:
            self.peer_hits += 1
        entry.hits += 1
        entry.last_access = self._clock() if now is None else now
        return entry

    def record_miss(self, key: str, size: int) -> None:
        """A read the cache could not serve: ``size`` bytes came from the store."""
        self.misses += 1
        self.bytes_from_store += size

    def record_validation(self, key: str, *, changed: bool) -> None:
        """A conditional request checked a hit against the store. ``changed``: the store has another
        version, so the hit becomes a miss and the stale entry is dropped (record the fetch with
        :meth:`record_miss`, then :meth:`insert` the new version)."""
        self.validations += 1
        if not changed:
            return
        self.stale_validations += 1
        entry = self._index.get(key)
        if entry is None:
            return
        if entry.hits > 0:
            self.hits -= 1
            self.bytes_from_cache -= entry.size
            if entry.prewarmed and entry.hits == 1:
                self.prewarm_hits -= 1
                self.prewarm_hit_bytes -= entry.size
        self._remove(entry)

    # --- writes -------------------------------------------------------------------------------------
    def insert(
        self,
        key: str,
        etag: str,
        size: int,
        payload: Any = None,
        *,
        prewarm: bool = False,
        now: float | None = None,
    ) -> Inserted | Rejected:
        """Store (or replace) ``key`` in its owner shard, evicting by the policy until it fits. An object
        larger than one shard is rejected (any older copy is dropped: it would be stale)."""
        old = self._index.get(key)
        if old is not None:
            self._remove(old)
        shard_id = self._single if self._single is not None else self._ring.owner(key)
        if shard_id is None:
            return Rejected("the application has no cache shard (no live instance)")
        capacity = self.shard_capacity_bytes
        if size > capacity:
            return Rejected(f"{key}: {size} bytes is larger than one cache shard ({capacity} bytes)")
        shard = self._shards[shard_id]
        inserted = shard.inserted
        if shard.used + size > capacity:
            inserted = Inserted(shard_id, self._evict(shard, shard.used + size - capacity))
        entry = Entry(key, shard_id, etag, size, payload, prewarm, self._clock() if now is None else now)
        shard.entries[key] = entry
        self._index[key] = entry
        shard.used += size
        shard.policy.admit(key, size)
        if prewarm:
            self.prewarm_inserts += 1
        return inserted

    def _evict(self, shard: _Shard, needed: int) -> tuple[str, ...]:
        victims: list[str] = []
        freed = 0
        entries, index, policy = shard.entries, self._index, shard.policy
        while freed < needed:
            key = policy.victim()
            entry = entries.pop(key)
            del index[key]
            freed += entry.size
            victims.append(key)
        shard.used -= freed
        self.evictions += len(victims)
        self.evicted_bytes += freed
        return tuple(victims)

    def invalidate(self, key: str) -> bool:
        """Drop ``key`` (deleted or overwritten); True if it was cached."""
        entry = self._index.get(key)
        if entry is None:
            return False
        self._remove(entry)
        return True

    def _remove(self, entry: Entry) -> None:
        shard = self._shards[entry.shard]
        del shard.entries[entry.key]
        del self._index[entry.key]
        shard.used -= entry.size
        shard.policy.discard(entry.key)

    # --- numbers ------------------------------------------------------------------------------------
    def stats(self) -> CacheStats:
        return CacheStats(
            hits=self.hits,
            misses=self.misses,
            validations=self.validations,
            stale_validations=self.stale_validations,
            bytes_from_cache=self.bytes_from_cache,
            bytes_from_store=self.bytes_from_store,
            prewarm_inserts=self.prewarm_inserts,
            prewarm_hits=self.prewarm_hits,
            prewarm_hit_bytes=self.prewarm_hit_bytes,
            evictions=self.evictions,
            evicted_bytes=self.evicted_bytes,
            unload_drops=self.unload_drops,
            unload_dropped_bytes=self.unload_dropped_bytes,
            peer_hits=self.peer_hits,
            used_bytes=sum(shard.used for shard in self._shards.values()),
            capacity_bytes=self.shard_capacity_bytes * len(self._shards),
            objects=len(self._index),
        )
