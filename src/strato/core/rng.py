"""Seeded, named, independent random streams.

Every source of randomness in a run (arrivals, service times, a policy's tie-breaking, ...) asks for its
own stream by name. Naming streams instead of sharing one generator means that adding a random draw in
one component does not shift the numbers every other component sees, so a change to a policy can be
compared against a baseline on exactly the same workload.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from strato.errors import ConfigError

__all__ = ["RandomStreams"]

# Number of 32-bit words taken from the SHA-256 digest of a stream name: the whole digest, so two names
# collide only if SHA-256 does.
_NAME_WORDS = 8


def _name_key(name: str) -> tuple[int, ...]:
    # hashlib rather than hash(): Python salts str hashes per process (PYTHONHASHSEED), which would give
    # a different stream for the same name in every run.
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return tuple(int.from_bytes(digest[4 * i : 4 * i + 4], "little") for i in range(_NAME_WORDS))


class RandomStreams:
    """A family of independent random streams derived from one integer ``seed``.

    ``stream(name)`` depends only on ``(seed, name)``: not on which other streams were requested, nor in
    what order, nor on the process. Streams with different names (or seeds) are statistically independent:
    each is seeded through :class:`numpy.random.SeedSequence` with the seed as entropy and a SHA-256 digest
    of the name as the spawn key, which is the mechanism numpy provides for independent child streams.

    >>> streams = RandomStreams(42)
    >>> arrivals = streams.stream("arrivals")
    >>> float(arrivals.random()) == float(RandomStreams(42).stream("arrivals").random())
    True
    """

    __slots__ = ("_seed",)

    def __init__(self, seed: int | np.integer[Any]) -> None:
        # bool is an int subclass, and True as a seed is almost certainly a mistake.
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ConfigError(f"random seed must be an integer, got {seed!r}")
        if seed < 0:
            raise ConfigError(f"random seed must be non-negative, got {seed}")
        self._seed = int(seed)

    @property
    def seed(self) -> int:
        """The root seed this family was created with."""
        return self._seed

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        """The :class:`~numpy.random.SeedSequence` behind ``stream(name)``.

        Useful to seed something other than a numpy ``Generator``, or to ``.spawn()`` further independent
        children, e.g. one per worker process.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"random stream name must be a non-empty string, got {name!r}")
        return np.random.SeedSequence(entropy=self._seed, spawn_key=_name_key(name))

    def stream(self, name: str) -> np.random.Generator:
        """A new :class:`numpy.random.Generator` positioned at the start of the stream called ``name``.

        Each call returns a fresh generator that replays the same sequence, so ask once per component and
        keep it: two components asking for the same name get identical, not independent, numbers.
        """
        return np.random.Generator(np.random.PCG64(self.seed_sequence(name)))

    def __repr__(self) -> str:
        return f"RandomStreams(seed={self._seed})"
