"""What crosses module boundaries: object metadata, fetched objects and the store protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ObjectMeta:
    """One object as the store describes it; ``etag`` is without quotes."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class Fetched:
    """A GET's bytes. ``size`` is the whole object's size, also when ``data`` is a range of it."""

    data: bytes
    etag: str
    size: int


class ObjectStore(Protocol):
    """An asyncio object store, safe for many concurrent calls (each holds its own connection pool).

    Errors: :class:`~strato.storage.ObjectNotFound` (missing key or bucket), :class:`StoreUnavailable`
    (refused, reset, timed out, 5xx), :class:`CorruptObject` (a length or ETag mismatch of what arrived).
    """

    async def get(
        self,
        bucket: str,
        key: str,
        *,
        if_none_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> Fetched | None:
        """The object (or bytes ``[start, end)`` of it); ``None`` when its ETag is ``if_none_match``."""
        ...

    async def head(self, bucket: str, key: str) -> ObjectMeta: ...

    async def put(self, bucket: str, key: str, data: bytes) -> ObjectMeta: ...

    async def delete(self, bucket: str, key: str) -> None:
        """Remove the key; deleting a key that is not there is not an error (as in S3)."""
        ...

    async def list(self, bucket: str, prefix: str = "") -> list[ObjectMeta]:
        """Every object whose key starts with ``prefix``, sorted by key."""
        ...

    async def create_bucket(self, bucket: str) -> None:
        """Create the bucket; one that exists already is fine."""
        ...

    async def close(self) -> None: ...
