"""The cache's pure decisions: ring, shards, eviction policies, counters, history, scale-out."""

from __future__ import annotations

import itertools
import json

import pytest

from strato.errors import ConfigError
from strato.faas.cache import (
    AccessHistory,
    AppCache,
    Dropped,
    HashRing,
    Inserted,
    Rejected,
    instances_for_bandwidth,
    instances_for_working_set,
    make_policy,
    object_key,
    ranged_parts,
    split_object_key,
)

KEYS = [f"bucket/object-{index}" for index in range(20_000)]


def test_ring_adding_a_shard_moves_about_one_nth_of_keys_and_only_to_it() -> None:
    ring = HashRing(vnodes=128)
    for shard in ("a", "b", "c", "d"):
        ring.add(shard)
    before = {key: ring.owner(key) for key in KEYS}
    ring.add("e")
    after = {key: ring.owner(key) for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == "e" for key in moved)
    # 1/5 ideally; 128 virtual nodes keep it within a few points.
    assert 0.15 < len(moved) / len(KEYS) < 0.25
    ring.remove("e")
    assert {key: ring.owner(key) for key in KEYS} == before


def test_ring_spreads_keys_evenly_and_is_the_same_in_every_instance() -> None:
    ring, other = HashRing(), HashRing()
    for shard in ("a", "b", "c", "d"):
        ring.add(shard)
    for shard in ("d", "c", "b", "a"):
        other.add(shard)
    counts: dict[str | None, int] = {}
    for key in KEYS:
        owner = ring.owner(key)
        counts[owner] = counts.get(owner, 0) + 1
        assert other.owner(key) == owner
    assert set(counts) == {"a", "b", "c", "d"}
    assert max(counts.values()) / min(counts.values()) < 1.35
    assert HashRing().owner("x") is None
    with pytest.raises(ConfigError):
        HashRing(vnodes=0)


def test_keys_are_bucket_slash_key() -> None:
    assert object_key("models", "dir/resnet.npy") == "models/dir/resnet.npy"
    assert split_object_key("models/dir/resnet.npy") == ("models", "dir/resnet.npy")


def test_lru_evicts_least_recently_used_and_counts() -> None:
    cache = AppCache(100, "lru", clock=float)
    cache.add_shard("i1")
    for key in ("a", "b", "c"):
        assert isinstance(cache.insert(key, "e1", 30), Inserted)
    assert cache.lookup("a", now=1.0) is not None  # a becomes the most recent: b is next out
    result = cache.insert("d", "e1", 30)
    assert result == Inserted("i1", ("b",))
    assert "b" not in cache and {"a", "c", "d"} <= {key for key in ("a", "c", "d") if key in cache}
    cache.record_miss("b", 30)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.evicted_bytes) == (1, 1, 1, 30)
    assert (stats.used_bytes, stats.capacity_bytes, stats.objects) == (90, 100, 3)
    assert stats.bytes_from_cache == 30 and stats.bytes_from_store == 30 and stats.hit_ratio == 0.5


def test_objects_larger_than_a_shard_are_rejected_and_drop_their_stale_copy() -> None:
    cache = AppCache(100, clock=float)
    assert isinstance(cache.insert("k", "e", 10), Rejected)  # no shard yet
    cache.add_shard("i1")
    cache.insert("k", "e1", 10)
    rejected = cache.insert("k", "e2", 101)
    assert isinstance(rejected, Rejected) and "larger than one cache shard" in rejected.reason
    assert cache.peek("k") is None and cache.stats().used_bytes == 0


def test_replacing_and_invalidating_keep_bytes_right() -> None:
    cache = AppCache(100, clock=float)
    cache.add_shard("i1")
    cache.insert("k", "e1", 40, b"x" * 40)
    cache.insert("k", "e2", 60, b"y" * 60)
    entry = cache.peek("k")
    assert entry is not None and (entry.etag, entry.size, entry.payload) == ("e2", 60, b"y" * 60)
    assert cache.stats().used_bytes == 60
    assert cache.invalidate("k") and not cache.invalidate("k")
    assert cache.stats().used_bytes == 0 and len(cache) == 0


def test_stale_validation_turns_the_hit_into_a_miss() -> None:
    cache = AppCache(100, clock=float)
    cache.add_shard("i1")
    cache.insert("k", "e1", 10, prewarm=True)
    assert cache.lookup("k") is not None
    cache.record_validation("k", changed=False)
    assert cache.lookup("k") is not None
    cache.record_validation("k", changed=True)  # the second read found a newer version in the store
    cache.record_miss("k", 12)
    cache.insert("k", "e2", 12)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.validations, stats.stale_validations) == (1, 1, 2, 1)
    assert (stats.bytes_from_cache, stats.bytes_from_store) == (10, 12)
    assert (stats.prewarm_inserts, stats.prewarm_hits, stats.prewarm_hit_bytes) == (1, 1, 10)


def test_remove_shard_drops_only_its_objects_and_new_inserts_follow_the_ring() -> None:
    cache = AppCache(10_000, clock=float)
    cache.add_shard("i1")
    cache.add_shard("i2")
    placed = {f"b/{index}": cache.insert(f"b/{index}", "e", 10) for index in range(200)}
    on_i1 = [key for key, result in placed.items() if isinstance(result, Inserted) and result.shard == "i1"]
    assert 0 < len(on_i1) < 200
    assert all(
        cache.owner(key) == result.shard for key, result in placed.items() if isinstance(result, Inserted)
    )
    hit = cache.lookup(on_i1[0], from_shard="i2")
    assert hit is not None and hit.shard == "i1" and cache.stats().peer_hits == 1
    assert cache.remove_shard("i1") == Dropped(len(on_i1), 10 * len(on_i1))
    assert all(key not in cache for key in on_i1) and len(cache) == 200 - len(on_i1)
    stats = cache.stats()
    assert (stats.unload_drops, stats.unload_dropped_bytes, stats.capacity_bytes) == (
        len(on_i1),
        10 * len(on_i1),
        10_000,
    )
    assert all(cache.owner(key) == "i2" for key in on_i1)
    assert cache.remove_shard("gone") == Dropped(0, 0)


def test_gdsf_gives_up_a_large_cold_object_before_small_hot_ones() -> None:
    def run(policy: str) -> tuple[int, bool]:
        cache = AppCache(1_000_000, policy, clock=float)
        cache.add_shard("i1")
        hot = [f"hot{index}" for index in range(50)]
        for key in hot:
            cache.insert(key, "e", 5_000)
            cache.lookup(key)
            cache.lookup(key)
        cache.insert("big", "e", 700_000)  # fits; read once
        for index in range(20):  # 100 kB of new small objects: 50 kB must go
            cache.insert(f"new{index}", "e", 5_000)
        return sum(key in cache for key in hot), "big" in cache

    assert run("gdsf") == (50, False)
    kept, big_kept = run("lru")
    assert kept < 50 and big_kept


def test_gdsf_ages_out_objects_that_stop_being_read() -> None:
    cache = AppCache(30, "gdsf", clock=float)
    cache.add_shard("i1")
    cache.insert("old", "e", 10)
    for _ in range(5):
        cache.lookup("old")
    # A stream of new objects read twice each eventually outranks the once-hot object.
    for index in range(200):
        cache.insert(f"new{index}", "e", 10)
        cache.lookup(f"new{index}")
        cache.lookup(f"new{index}")
    assert "old" not in cache


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: gdsf, lru"):
        make_policy("arc")
    with pytest.raises(ConfigError):
        AppCache(0)


def test_history_round_trips_and_plans_by_value_per_byte() -> None:
    history = AccessHistory(half_life_s=3600)
    for t in range(10):
        history.record("hot-small", 1_000, float(t))
    for t in range(10):
        history.record("hot-large", 50_000_000, float(t))
    history.record("once", 500, 5.0)
    history.record("warm", 2_000, 1.0)
    history.record("warm", 2_000, 2.0)
    restored = AccessHistory.from_json(history.to_json())
    assert restored.to_json() == history.to_json() and len(restored) == 4
    plan = restored.prewarm_plan(10_000_000, 20.0)
    # Read-once objects are never pre-warmed; the 50 MB object does not fit 10 MB.
    assert plan == [("hot-small", 1_000), ("warm", 2_000)]
    assert restored.prewarm_plan(100_000_000, 20.0)[-1] == ("hot-large", 50_000_000)
    assert sum(size for _, size in restored.prewarm_plan(2_500, 20.0)) <= 2_500
    assert restored.working_set_bytes(9.0, 5.0) == 1_000 + 50_000_000 + 500
    assert restored.working_set_bytes(100.0, 5.0) == 0


def test_history_prefers_recent_reads_over_old_ones() -> None:
    history = AccessHistory(half_life_s=60)
    for t in range(5):
        history.record("yesterday", 1_000, float(t))
    for t in range(3):
        history.record("now", 1_000, 10_000.0 + t)
    assert history.prewarm_plan(1_000, 10_010.0) == [("now", 1_000)]


def test_history_stays_bounded() -> None:
    history = AccessHistory(max_objects=10)
    for index in range(100):
        history.record(f"k{index}", 1, float(index))
    assert len(history) <= 20
    assert "k99" in history


@pytest.mark.parametrize(
    "text", ["{}", "[]", "nope", json.dumps({"format": "strato.faas.cache.history/1", "half_life_s": 1})]
)
def test_history_rejects_what_it_did_not_write(text: str) -> None:
    with pytest.raises(ConfigError, match="not a cache access history"):
        AccessHistory.from_json(text)


def test_scale_out_counts() -> None:
    mib = 2**20
    assert instances_for_working_set(0, 256 * mib, 8) == 1
    assert instances_for_working_set(256 * mib, 256 * mib, 8) == 1
    assert instances_for_working_set(256 * mib + 1, 256 * mib, 8) == 2
    assert instances_for_working_set(10 * 256 * mib, 256 * mib, 8) == 8
    assert instances_for_bandwidth(256 * mib, 100e6, 1.0, 8) == 3
    assert instances_for_bandwidth(1, 100e6, 1.0, 8) == 1
    with pytest.raises(ConfigError):
        instances_for_working_set(1, 1, 0)
    parts = ranged_parts(256 * mib, 4)
    assert len(parts) == 4 and parts[0][0] == 0 and parts[-1][1] == 256 * mib
    assert all(end == next_start for (_, end), (next_start, _) in itertools.pairwise(parts))
    assert ranged_parts(1_000, 4) == [(0, 1_000)]
    assert ranged_parts(0, 4) == [(0, 0)]
