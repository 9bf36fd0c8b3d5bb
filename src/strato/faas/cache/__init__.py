"""Faa$T's cache decisions, one pure implementation for the live storage broker and the simulator.

No I/O, no asyncio, no locks (callers are single-threaded). Keys are ``"bucket/key"`` strings
(:func:`object_key`). See docs/cache-sim.md.
"""

from strato.faas.cache.appcache import (
    AppCache,
    CacheStats,
    Dropped,
    Entry,
    Inserted,
    Rejected,
    object_key,
    split_object_key,
)
from strato.faas.cache.history import AccessHistory
from strato.faas.cache.policies import EvictionPolicy, make_policy, policy_names, register_policy
from strato.faas.cache.ring import HashRing
from strato.faas.cache.scaling import instances_for_bandwidth, instances_for_working_set, ranged_parts
from strato.faas.cache.simulator import AppCacheSim, CacheSimResult, simulate_cache

__all__ = [
    "AccessHistory",
    "AppCache",
    "AppCacheSim",
    "CacheSimResult",
    "CacheStats",
    "Dropped",
    "Entry",
    "EvictionPolicy",
    "HashRing",
    "Inserted",
    "Rejected",
    "instances_for_bandwidth",
    "instances_for_working_set",
    "make_policy",
    "object_key",
    "policy_names",
    "ranged_parts",
    "register_policy",
    "simulate_cache",
    "split_object_key",
]
