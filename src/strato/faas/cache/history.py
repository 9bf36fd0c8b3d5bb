"""An application's access history: what to pre-warm when it is loaded again, and its working set.

Per object: size, access count, a recency-weighted count (halved every ``half_life_s`` without access) and
the last access time. The history is persisted as JSON when the app unloads and read back when it loads.

The pre-warm plan ranks objects by expected value per cached byte: recency-weighted count (how likely the
next load reads it again) times the modelled fetch time it saves (latency + size / bandwidth), divided by
its size, then fills the capacity greedily, best first, skipping what no longer fits. Objects read only
once are left out: about half of Azure's apps never read an object twice, and pre-warming their objects
would only spend store bandwidth during start-up.
"""

from __future__ import annotations

import json
from typing import Any

from strato.errors import ConfigError
from strato.faas.cache.policies import DEFAULT_FETCH_BANDWIDTH_BPS, DEFAULT_FETCH_LATENCY_S

_FORMAT = "strato.faas.cache.history/1"
DEFAULT_HALF_LIFE_S = 86400.0
DEFAULT_MAX_OBJECTS = 100_000

# Field positions of an object's record (a list: records are updated on every access).
_SIZE, _COUNT, _SCORE, _LAST = 0, 1, 2, 3


class AccessHistory:
    def __init__(
        self, *, half_life_s: float = DEFAULT_HALF_LIFE_S, max_objects: int = DEFAULT_MAX_OBJECTS
    ) -> None:
        if half_life_s <= 0 or max_objects < 1:
            raise ConfigError("an access history needs half_life_s > 0 and max_objects >= 1")
        self.half_life_s = float(half_life_s)
        self.max_objects = max_objects
        self._objects: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, key: str) -> bool:
        return key in self._objects

    def record(self, key: str, size: int, t: float) -> None:
        """One read of ``key`` (``size`` bytes now) at time ``t`` (seconds, any epoch, non-decreasing
        per key for the decay to mean anything)."""
        record = self._objects.get(key)
        if record is None:
            self._objects[key] = [size, 1, 1.0, t]
            if len(self._objects) > 2 * self.max_objects:
                self._trim(t)
            return
        elapsed = t - record[_LAST]
        decay = 0.5 ** (elapsed / self.half_life_s) if elapsed > 0 else 1.0
        record[_SIZE] = size
        record[_COUNT] += 1
        record[_SCORE] = record[_SCORE] * decay + 1.0
        record[_LAST] = max(t, record[_LAST])

    def _weight(self, record: list[Any], now: float) -> float:
        elapsed = max(0.0, now - record[_LAST])
        weight: float = record[_SCORE] * 0.5 ** (elapsed / self.half_life_s)
        return weight

    def _trim(self, now: float) -> None:
        """Keep the ``max_objects`` objects of highest recency-weighted count (amortised: runs when
        the history has doubled)."""
        ranked = sorted(self._objects.items(), key=lambda item: self._weight(item[1], now), reverse=True)
        self._objects = dict(ranked[: self.max_objects])

    def prewarm_plan(
        self,
        capacity_bytes: int,
        now: float,
        *,
        min_accesses: int = 2,
        fetch_latency_s: float = DEFAULT_FETCH_LATENCY_S,
        fetch_bandwidth_bps: float = DEFAULT_FETCH_BANDWIDTH_BPS,
    ) -> list[tuple[str, int]]:
        """``(key, size)`` pairs to fetch at load, most valuable first, whose sizes sum to at most
        ``capacity_bytes``."""
        candidates: list[tuple[float, str, int]] = []
        for key, record in self._objects.items():
            size = int(record[_SIZE])
            if record[_COUNT] < min_accesses or size > capacity_bytes:
                continue
            saved_s = fetch_latency_s + size / fetch_bandwidth_bps
            candidates.append((-self._weight(record, now) * saved_s / max(size, 1), key, size))
        candidates.sort()
        plan: list[tuple[str, int]] = []
        free = capacity_bytes
        for _, key, size in candidates:
            if size <= free:
                plan.append((key, size))
                free -= size
        return plan

    def size_of(self, key: str) -> int | None:
        """The object's size when last read, None when it never was."""
        record = self._objects.get(key)
        return None if record is None else int(record[_SIZE])

    def working_set_bytes(
        self, now: float, window_s: float, *, min_accesses: int = 1, max_size: int | None = None
    ) -> int:
        """Bytes of the distinct objects read in the last ``window_s`` seconds before ``now``; with
        ``min_accesses`` only those read at least that often, with ``max_size`` only those no larger
        (what a cache can hold and would serve again)."""
        since = now - window_s
        largest = max_size if max_size is not None else float("inf")
        return sum(
            int(record[_SIZE])
            for record in self._objects.values()
            if record[_LAST] >= since and record[_COUNT] >= min_accesses and record[_SIZE] <= largest
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "half_life_s": self.half_life_s,
                "max_objects": self.max_objects,
                "objects": [[key, *record] for key, record in self._objects.items()],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AccessHistory:
        """Read what :meth:`to_json` wrote; raises :class:`ConfigError` for anything else."""
        try:
            data = json.loads(text)
            if data.get("format") != _FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {_FORMAT!r}")
            history = cls(half_life_s=float(data["half_life_s"]), max_objects=int(data["max_objects"]))
            for key, size, count, score, last in data["objects"]:
                if not isinstance(key, str) or int(size) < 0 or int(count) < 1:
                    raise ValueError(f"bad object record for {key!r}")
                history._objects[key] = [int(size), int(count), float(score), float(last)]
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise ConfigError(f"not a cache access history: {error}") from None
        return history
