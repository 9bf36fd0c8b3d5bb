"""Errors of the object store clients: one line each, naming the bucket/key or the store."""

from __future__ import annotations

from strato.errors import NotFoundError, StratoError, UnavailableError


class StorageError(StratoError):
    """Base of every error an :class:`~strato.storage.ObjectStore` raises on purpose."""


class ObjectNotFound(StorageError, NotFoundError, KeyError):
    """The key (or its bucket) does not exist. A ``KeyError`` too, so handler code can catch it as one."""

    def __init__(self, bucket: str, key: str | None = None, *, what: str | None = None) -> None:
        self.bucket, self.key = bucket, key
        where = f"{bucket}/{key}" if key is not None else bucket
        super().__init__(what or f"no object {where!r} in the store")

    def __str__(self) -> str:
        # KeyError quotes its argument (repr); the message is meant to be read as it is.
        return str(self.args[0])


class StoreUnavailable(StorageError, UnavailableError):
    """The store cannot answer now: connection refused or reset, a timeout, or a 5xx from the store."""


class CorruptObject(StorageError):
    """What arrived does not match what the store announced (length, or checksum/ETag)."""
