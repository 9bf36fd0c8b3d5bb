"""Scale-out decisions beyond compute: instances for the working set, and for a large object's bandwidth.

Faa$T adds instances when the app's working set no longer fits the cache memory of its instances, and
fetches large objects in ranges from several instances at once to add I/O bandwidth. These functions
only decide how many; the platform starts the instances and issues the ranged reads.
"""

from __future__ import annotations

import math

from strato.errors import ConfigError

DEFAULT_MIN_PART_BYTES = 8 * 2**20


def _check_max(max_instances: int) -> None:
    if max_instances < 1:
        raise ConfigError(f"max_instances must be at least 1, got {max_instances}")


def instances_for_working_set(working_set_bytes: int, shard_capacity_bytes: int, max_instances: int) -> int:
    """Instances whose shards together hold the working set: ceil(working set / shard), at least 1 and at
    most ``max_instances``."""
    _check_max(max_instances)
    if shard_capacity_bytes <= 0:
        raise ConfigError(f"shard capacity must be positive, got {shard_capacity_bytes} bytes")
    needed = math.ceil(max(0, working_set_bytes) / shard_capacity_bytes)
    return min(max(1, needed), max_instances)


def instances_for_bandwidth(
    object_bytes: int, per_instance_bandwidth_bps: float, target_s: float, max_instances: int
) -> int:
    """Instances fetching ranges in parallel so that ``object_bytes`` arrives within ``target_s`` at
    ``per_instance_bandwidth_bps`` each: ceil(size / (bandwidth x target)), clamped to [1, max]."""
    _check_max(max_instances)
    if per_instance_bandwidth_bps <= 0 or target_s <= 0:
        raise ConfigError("bandwidth and target time must be positive")
    needed = math.ceil(max(0, object_bytes) / (per_instance_bandwidth_bps * target_s))
    return min(max(1, needed), max_instances)


def ranged_parts(
    size: int, parts: int, *, min_part_bytes: int = DEFAULT_MIN_PART_BYTES
) -> list[tuple[int, int]]:
    """Split ``[0, size)`` into at most ``parts`` contiguous ``[start, end)`` ranges of near-equal size,
    none smaller than ``min_part_bytes`` (a small object is one range: a request's latency would cost more
    than the parallel transfer saves)."""
    if size < 0 or parts < 1 or min_part_bytes < 1:
        raise ConfigError("ranged_parts needs size >= 0, parts >= 1 and min_part_bytes >= 1")
    count = max(1, min(parts, size // min_part_bytes))
    bounds = [size * index // count for index in range(count + 1)]
    return [(bounds[index], bounds[index + 1]) for index in range(count)]
