"""A consistent-hash ring with virtual nodes: which shard owns a key.

Each shard puts ``vnodes`` points on a 64-bit ring; a key belongs to the first point clockwise of its
hash. Adding a shard moves to it only the keys that now fall just before its points (about 1/n of them);
removing one hands its keys to their next points. The hash is BLAKE2b, not Python's ``hash``, so the same
key lands on the same shard in every process and every run (simulations are reproducible).
"""

from __future__ import annotations

from bisect import bisect_right
from hashlib import blake2b

from strato.errors import ConfigError

DEFAULT_VNODES = 128


def ring_hash(text: str) -> int:
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    __slots__ = ("_nodes", "_owners", "_points", "vnodes")

    def __init__(self, vnodes: int = DEFAULT_VNODES) -> None:
        if vnodes < 1:
            raise ConfigError(f"a hash ring needs at least 1 virtual node per shard, got {vnodes}")
        self.vnodes = vnodes
        self._points: list[int] = []
        self._owners: list[str] = []
        self._nodes: set[str] = set()

    @property
    def nodes(self) -> frozenset[str]:
        return frozenset(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def _rebuild(self, pairs: list[tuple[int, str]]) -> None:
        # Ties (astronomically rare) break by node name so the ring does not depend on insertion order.
        pairs.sort()
        self._points = [point for point, _ in pairs]
        self._owners = [node for _, node in pairs]

    def add(self, node: str) -> None:
        if node in self._nodes:
            return
        self._nodes.add(node)
        pairs = list(zip(self._points, self._owners, strict=True))
        pairs += [(ring_hash(f"{node}#{index}"), node) for index in range(self.vnodes)]
        self._rebuild(pairs)

    def remove(self, node: str) -> None:
        if node not in self._nodes:
            return
        self._nodes.discard(node)
        self._rebuild([pair for pair in zip(self._points, self._owners, strict=True) if pair[1] != node])

    def owner(self, key: str) -> str | None:
        if not self._points:
            return None
        index = bisect_right(self._points, ring_hash(key))
        return self._owners[index if index < len(self._points) else 0]
