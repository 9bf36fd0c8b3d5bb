"""A local-directory object store (``dir:///abs/path``) for unit tests only: same semantics as S3Store.

Objects are files ``root/<bucket>/<quoted key>`` (the key percent-quoted into one file name, so any
key works and prefixes need no directories); ETags are MD5s of the content, as S3 gives for simple PUTs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import urllib.parse
from pathlib import Path

from strato.errors import ConfigError
from strato.storage.errors import ObjectNotFound, StorageError
from strato.storage.model import Fetched, ObjectMeta


def _file_name(key: str) -> str:
    if not key:
        raise StorageError("an object key cannot be empty")
    return urllib.parse.quote(key, safe="")


def _check_bucket(bucket: str) -> None:
    if not bucket or "/" in bucket or bucket in (".", ".."):
        raise StorageError(f"bucket name {bucket!r} is not valid (no '/', not empty)")


class LocalDirStore:
    """An :class:`~strato.storage.ObjectStore` over a directory; not for production (no concurrency
    control beyond atomic renames)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _bucket_dir(self, bucket: str) -> Path:
        _check_bucket(bucket)
        path = self.root / bucket
        if not path.is_dir():
            raise ObjectNotFound(bucket, None, what=f"no bucket {bucket!r} in the store")
        return path

    def _read(self, bucket: str, key: str) -> bytes:
        path = self._bucket_dir(bucket) / _file_name(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(bucket, key) from None

    async def get(
        self,
        bucket: str,
        key: str,
        *,
        if_none_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> Fetched | None:
        data = await asyncio.to_thread(self._read, bucket, key)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if if_none_match is not None and if_none_match.strip('"') == etag:
            return None
        if byte_range is not None:
            start, end = byte_range
            if not 0 <= start < end:
                raise ConfigError(f"byte range [{start}, {end}) of {bucket}/{key} is empty or negative")
            if start >= len(data):
                raise StorageError(
                    f"byte range [{start}, {end}) starts past the end of {bucket}/{key} ({len(data)} bytes)"
                )
            return Fetched(data=data[start:end], etag=etag, size=len(data))
        return Fetched(data=data, etag=etag, size=len(data))

    async def head(self, bucket: str, key: str) -> ObjectMeta:
        data = await asyncio.to_thread(self._read, bucket, key)
        return ObjectMeta(key=key, size=len(data), etag=hashlib.md5(data, usedforsecurity=False).hexdigest())

    async def put(self, bucket: str, key: str, data: bytes) -> ObjectMeta:
        path = self._bucket_dir(bucket) / _file_name(key)

        def write() -> None:
            # Write then rename, so a concurrent reader sees the old or the new object, never half.
            temporary = path.with_name(f".tmp-{os.getpid()}-{id(data)}-{path.name}"[:255])
            temporary.write_bytes(data)
            temporary.replace(path)

        await asyncio.to_thread(write)
        return ObjectMeta(key=key, size=len(data), etag=hashlib.md5(data, usedforsecurity=False).hexdigest())

    async def delete(self, bucket: str, key: str) -> None:
        path = self._bucket_dir(bucket) / _file_name(key)
        path.unlink(missing_ok=True)

    async def list(self, bucket: str, prefix: str = "") -> list[ObjectMeta]:
        directory = self._bucket_dir(bucket)

        def scan() -> list[ObjectMeta]:
            found = []
            for entry in directory.iterdir():
                if entry.name.startswith(".tmp-"):
                    continue
                key = urllib.parse.unquote(entry.name)
                if key.startswith(prefix):
                    data = entry.read_bytes()
                    found.append(
                        ObjectMeta(
                            key=key, size=len(data), etag=hashlib.md5(data, usedforsecurity=False).hexdigest()
                        )
                    )
            return sorted(found, key=lambda item: item.key)

        return await asyncio.to_thread(scan)

    async def close(self) -> None:
        return None

    async def create_bucket(self, bucket: str) -> None:
        _check_bucket(bucket)
        (self.root / bucket).mkdir(parents=True, exist_ok=True)
