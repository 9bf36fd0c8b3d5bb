"""strato's S3 client: obstore (the Rust ``object_store`` crate) over S3 path-style HTTP.

Why obstore and not aiobotocore: 3-4x lower small-GET latency and 4-6x more GETs per second per CPU on
this 2-core machine, same large-GET throughput (benchmarks/s3_client_bench.py, docs/storage.md).
obstore binds a store to one bucket, so this keeps one per bucket; it has no CreateBucket, which is one
presigned PUT here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import urllib.parse
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, TypeVar

import obstore
from obstore.exceptions import NotFoundError, NotModifiedError
from obstore.store import S3Store as _ObstoreS3

from strato.errors import ConfigError
from strato.storage.errors import CorruptObject, ObjectNotFound, StorageError, StoreUnavailable
from strato.storage.model import Fetched, ObjectMeta
from strato.storage.server import ACCESS_KEY, SECRET_KEY

T = TypeVar("T")

_STATUS = re.compile(r"status code: (\d{3})")
_MD5 = re.compile(r"^[0-9a-f]{32}$")
# MD5 of a large body runs in a thread (hashlib lets go of the GIL) so it does not stall the event loop.
_HASH_IN_THREAD_BYTES = 1 << 20


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line[:300]


def _strip_quotes(etag: str | None) -> str:
    return (etag or "").strip().removeprefix("W/").strip('"')


class S3Store:
    """An :class:`~strato.storage.ObjectStore` for an S3 server at ``host:port`` (HTTP, path-style).

    Every call ends within ``timeout_s`` (connect, or the whole request): a dead or stalled server gives
    :class:`StoreUnavailable`, never a hang. No retries: the caller (the cache broker) decides.
    ``verify_etag`` checks a whole object's MD5 against its ETag when the ETag is a plain MD5.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        timeout_s: float = 30.0,
        max_connections: int = 16,
        verify_etag: bool = True,
    ) -> None:
        self.endpoint = f"http://{host}:{port}"
        self.timeout_s = timeout_s
        self.verify_etag = verify_etag
        self._access_key, self._secret_key = access_key, secret_key
        self._max_connections = max_connections
        self._buckets: dict[str, _ObstoreS3] = {}
        # obstore pools connections per store; this bounds the requests in flight across all buckets.
        self._slots = asyncio.Semaphore(max_connections)

    def _store(self, bucket: str) -> _ObstoreS3:
        store = self._buckets.get(bucket)
        if store is None:
            store = _ObstoreS3(
                bucket,
                endpoint=self.endpoint,
                access_key_id=self._access_key,
                secret_access_key=self._secret_key,
                region="us-east-1",
                virtual_hosted_style_request=False,
                client_options={
                    "allow_http": True,
                    "timeout": timedelta(seconds=self.timeout_s),
                    "connect_timeout": timedelta(seconds=min(self.timeout_s, 5.0)),
                    "pool_max_idle_per_host": str(self._max_connections),
                },
                retry_config={
                    "max_retries": 0,
                    "retry_timeout": timedelta(seconds=self.timeout_s),
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=100),
                        "max_backoff": timedelta(seconds=1),
                        "base": 2,
                    },
                },
            )
            self._buckets[bucket] = store
        return store

    async def _call(self, bucket: str, key: str | None, work: Awaitable[T]) -> T:
        """Run one request under the connection bound and the deadline, mapping obstore's errors."""
        where = f"{bucket}/{key}" if key is not None else bucket
        try:
            async with self._slots:
                return await asyncio.wait_for(work, self.timeout_s)
        except TimeoutError:
            raise StoreUnavailable(
                f"object store at {self.endpoint} did not answer within {self.timeout_s:g}s ({where})"
            ) from None
        except NotFoundError as error:
            if "NoSuchBucket" in str(error):
                raise ObjectNotFound(bucket, key, what=f"no bucket {bucket!r} in the store") from None
            raise ObjectNotFound(bucket, key) from None
        except (StorageError, NotModifiedError):
            raise
        except Exception as error:
            raise self._classify(error, bucket, key, where) from None

    def _classify(self, error: Exception, bucket: str, key: str | None, where: str) -> StorageError:
        text = str(error)
        status = _STATUS.search(text)
        if status is not None:
            code = int(status.group(1))
            if code == 404:
                if "NoSuchBucket" in text:
                    return ObjectNotFound(bucket, key, what=f"no bucket {bucket!r} in the store")
                return ObjectNotFound(bucket, key)
            if code >= 500:
                return StoreUnavailable(f"object store at {self.endpoint} answered {code} for {where}")
            return StorageError(f"object store refused {where}: {_first_line(error)}")
        if type(error).__name__ in ("InvalidPathError",):
            return StorageError(f"key {key!r} is not valid for the store: {_first_line(error)}")
        if "IncompleteBody" in text or "decoding response body" in text:
            return CorruptObject(
                f"{where}: the response body broke off or was malformed ({_first_line(error)})"
            )
        return StoreUnavailable(
            f"object store at {self.endpoint} unavailable for {where}: {_first_line(error)}"
        )

    async def get(
        self,
        bucket: str,
        key: str,
        *,
        if_none_match: str | None = None,
        byte_range: tuple[int, int] | None = None,
    ) -> Fetched | None:
        if byte_range is not None:
            start, end = byte_range
            if not 0 <= start < end:
                raise ConfigError(f"byte range [{start}, {end}) of {bucket}/{key} is empty or negative")
            return await self._call(bucket, key, self._ranged_get(bucket, key, start, end, if_none_match))
        options: dict[str, Any] = {}
        if if_none_match is not None:
            options["if_none_match"] = f'"{_strip_quotes(if_none_match)}"'

        async def fetch() -> tuple[bytes, Any]:
            result = await obstore.get_async(self._store(bucket), key, options=options)  # type: ignore[arg-type]
            body = await result.bytes_async()
            return bytes(body), result.meta

        try:
            data, meta = await self._call(bucket, key, fetch())
        except NotModifiedError:
            return None
        size, etag = int(meta["size"]), _strip_quotes(meta.get("e_tag"))
        if len(data) != size:
            raise CorruptObject(f"{bucket}/{key}: {len(data)} bytes arrived, the store announced {size}")
        if self.verify_etag and _MD5.match(etag):
            digest = await asyncio.to_thread(_md5, data) if len(data) >= _HASH_IN_THREAD_BYTES else _md5(data)
            if digest != etag:
                raise CorruptObject(
                    f"{bucket}/{key}: MD5 of the {len(data)} bytes that arrived is {digest}, ETag says {etag}"
                )
        return Fetched(data=data, etag=etag, size=size)

    async def _ranged_get(
        self, bucket: str, key: str, start: int, end: int, if_none_match: str | None
    ) -> Fetched | None:
        """A ranged GET over a presigned URL. rclone serve s3 answers ranges with 200 and a Content-Range
        (S3 says 206), which obstore refuses; this accepts either, and checks the range and length."""
        url = urllib.parse.urlsplit(
            str(await obstore.sign_async(self._store(bucket), "GET", key, timedelta(seconds=300)))
        )
        headers = {"Range": f"bytes={start}-{end - 1}"}
        if if_none_match is not None:
            headers["If-None-Match"] = f'"{_strip_quotes(if_none_match)}"'
        status, answer, body = await _http_get(url, headers)
        where = f"{bucket}/{key}"
        if status == 304:
            return None
        if status == 404:
            if b"NoSuchBucket" in body:
                raise ObjectNotFound(bucket, key, what=f"no bucket {bucket!r} in the store")
            raise ObjectNotFound(bucket, key)
        if status >= 500:
            raise StoreUnavailable(f"object store at {self.endpoint} answered {status} for {where}")
        if status not in (200, 206):
            raise StorageError(
                f"object store refused range [{start}, {end}) of {where}: {status} {body[:200]!r}"
            )
        etag = _strip_quotes(answer.get("etag"))
        found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", answer.get("content-range", ""))
        if found is None:
            raise CorruptObject(f"{where}: the store answered a range request without a Content-Range")
        first, last, size = (int(group) for group in found.groups())
        if first != start or last + 1 != min(end, size) or len(body) != last + 1 - first:
            raise CorruptObject(
                f"{where}: asked bytes [{start}, {end}), got {len(body)} bytes "
                f"announced as {first}-{last}/{size}"
            )
        return Fetched(data=body, etag=etag, size=size)

    async def head(self, bucket: str, key: str) -> ObjectMeta:
        meta = await self._call(bucket, key, obstore.head_async(self._store(bucket), key))
        return ObjectMeta(key=key, size=int(meta["size"]), etag=_strip_quotes(meta.get("e_tag")))

    async def put(self, bucket: str, key: str, data: bytes) -> ObjectMeta:
        result = await self._call(bucket, key, obstore.put_async(self._store(bucket), key, data))
        return ObjectMeta(key=key, size=len(data), etag=_strip_quotes(result.get("e_tag")))

    async def delete(self, bucket: str, key: str) -> None:
        await self._call(bucket, key, obstore.delete_async(self._store(bucket), key))

    async def list(self, bucket: str, prefix: str = "") -> list[ObjectMeta]:
        # obstore lists by path segments ("a/" -> "a/..."); S3 prefixes are plain string prefixes
        # ("a/o" matches "a/one"), so list the enclosing "directory" and filter.
        directory = prefix.rpartition("/")[0]

        async def collect() -> list[ObjectMeta]:
            found: list[ObjectMeta] = []
            stream = obstore.list(self._store(bucket), prefix=directory or None, chunk_size=1000)
            async for batch in stream:
                for meta in batch:
                    path = str(meta["path"])
                    if path.startswith(prefix):
                        found.append(
                            ObjectMeta(
                                key=path, size=int(meta["size"]), etag=_strip_quotes(meta.get("e_tag"))
                            )
                        )
            return sorted(found, key=lambda item: item.key)

        return await self._call(bucket, None, collect())

    async def create_bucket(self, bucket: str) -> None:
        url = await self._call(
            bucket, None, obstore.sign_async(self._store(bucket), "PUT", "", timedelta(seconds=60))
        )
        status, body = await self._call(bucket, None, asyncio.to_thread(_http_put, str(url), self.timeout_s))
        if status in (200, 204) or (status == 409 and b"BucketAlready" in body):
            return
        if status >= 500:
            raise StoreUnavailable(
                f"object store at {self.endpoint} answered {status} creating bucket {bucket!r}"
            )
        raise StorageError(f"object store refused to create bucket {bucket!r}: {status} {body[:200]!r}")

    async def close(self) -> None:
        self._buckets.clear()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def _http_get(
    url: urllib.parse.SplitResult, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET on a fresh connection: (status, lower-cased headers, the Content-Length body)."""
    reader, writer = await asyncio.open_connection(url.hostname, url.port, limit=1 << 20)
    try:
        lines = [f"GET {url.path}?{url.query} HTTP/1.1", f"Host: {url.netloc}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        answer = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            if name:
                answer[name.strip().lower()] = value.strip()
        length = int(answer.get("content-length", "0"))
        try:
            body = await reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError as error:
            raise CorruptObject(
                f"the response body broke off after {len(error.partial)} of {length} bytes ({url.path})"
            ) from None
        return status, answer, body
    finally:
        writer.close()


def _http_put(url: str, timeout_s: float) -> tuple[int, bytes]:
    import http.client

    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        connection.request("PUT", f"{parts.path}?{parts.query}", body=b"")
        response = connection.getresponse()
        return response.status, response.read()
    except OSError as error:
        raise StoreUnavailable(
            f"object store at {parts.hostname}:{parts.port} unavailable: {error}"
        ) from None
    finally:
        connection.close()
