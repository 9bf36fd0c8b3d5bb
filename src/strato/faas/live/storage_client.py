"""What a handler's ``context.storage`` is: object storage reached through the platform.

An instance has no network of its own, so every storage call is a STORAGE frame on the instance's control
socket, answered by the node's storage broker with a STORAGE_REPLY (``storage_broker.py``), which serves it
from the application's cache or from the object store. The handler's code is the same whether the cache is
off, plain LRU or Faa$T: only the server's ``--cache`` changes.

This module runs inside instances: the standard library and ``frames`` only.
"""

from __future__ import annotations

import io
import itertools
import json
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from strato.faas.live import frames


class StorageError(Exception):
    """A storage call the platform could not carry out; the message says why."""


class ObjectNotFound(StorageError, KeyError):
    """The bucket has no such key (a KeyError, so ``except KeyError`` works as for a dict)."""

    def __str__(self) -> str:  # KeyError would print the message's repr
        return str(self.args[0]) if self.args else "object not found"


class StoreUnavailable(StorageError):
    """The object store did not answer (down, too slow, or failing); an uncaught one answers 503."""


class AccessDenied(StorageError):
    """The function was not deployed with access to this bucket (``strato faas deploy --bucket``)."""


class InvalidRequest(StorageError, ValueError):
    """A bucket name, key, range or object size the platform refuses."""


_ERRORS: dict[str, type[StorageError]] = {
    "not_found": ObjectNotFound,
    "unavailable": StoreUnavailable,
    "denied": AccessDenied,
    "invalid": InvalidRequest,
}


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class StorageLink:
    """The request/reply exchange with the broker over the control socket.

    With one invocation at a time the handler runs on the thread that reads the socket, and nothing else
    arrives while it waits, so it reads its reply itself. With several, the instance's main loop reads
    every frame and hands replies to the waiting threads (``deliver``).

    A large cached object may come *tentatively*, before the broker has validated it against the store,
    so that the copy and the validation overlap; it is used only once a second reply confirms it (or is
    replaced by what that reply carries)."""

    def __init__(
        self,
        sock: socket.socket,
        read_frame: Callable[[], tuple[int, int, bytes, bytes]],
        send_lock: threading.Lock,
        *,
        concurrent: bool,
    ) -> None:
        self.sock = sock
        self.read_frame = read_frame
        self.send_lock = send_lock
        self.concurrent = concurrent
        self.ids = itertools.count(1)
        self.waiting: dict[int, queue.SimpleQueue[tuple[bytes, bytes] | None]] = {}
        self.lock = threading.Lock()
        self.exchange = threading.Lock()
        """With one invocation at a time, one call's request and replies at a time (a handler may call
        storage from threads of its own, and they would read each other's replies)."""

    def call(self, request: dict[str, Any], body: bytes = b"") -> tuple[dict[str, Any], bytes]:
        call_id = next(self.ids) & 0xFFFFFFFF
        meta = json.dumps(request, separators=(",", ":")).encode()
        header = frames.HEADER.pack(call_id, frames.STORAGE, len(meta), len(body))
        replies: queue.SimpleQueue[tuple[bytes, bytes] | None] | None = None
        if self.concurrent:
            replies = queue.SimpleQueue()
            with self.lock:
                self.waiting[call_id] = replies
            return self._exchange(call_id, header, meta, body, replies)
        with self.exchange:
            return self._exchange(call_id, header, meta, body, None)

    def _exchange(
        self,
        call_id: int,
        header: bytes,
        meta: bytes,
        body: bytes,
        replies: queue.SimpleQueue[tuple[bytes, bytes] | None] | None,
    ) -> tuple[dict[str, Any], bytes]:
        try:
            with self.send_lock:
                self.sock.sendall(header + meta)
                if body:
                    self.sock.sendall(body)
            tentative: tuple[dict[str, Any], bytes] | None = None
            while True:
                reply_meta, reply_body = self._next(call_id, replies)
                reply = _parsed(reply_meta)
                if reply.get("tentative"):
                    tentative = (reply, reply_body)
                    continue
                if reply.get("confirmed"):
                    if tentative is None:
                        raise StorageError("the platform confirmed a storage reply it never sent")
                    return tentative
                return _checked(reply), reply_body
        finally:
            if replies is not None:
                with self.lock:
                    self.waiting.pop(call_id, None)

    def _next(
        self, call_id: int, replies: queue.SimpleQueue[tuple[bytes, bytes] | None] | None
    ) -> tuple[bytes, bytes]:
        if replies is not None:
            got = replies.get()
            if got is None:
                raise StoreUnavailable("the platform closed the instance's channel")
            return got
        try:
            reply_id, kind, meta, body = self.read_frame()
        except EOFError:
            raise StoreUnavailable("the platform closed the instance's channel") from None
        if kind != frames.STORAGE_REPLY or reply_id != call_id:
            raise StorageError(f"the platform answered a storage call with frame kind {kind}")
        return meta, body

    def deliver(self, call_id: int, meta: bytes, body: bytes) -> None:
        with self.lock:
            replies = self.waiting.get(call_id)
        if replies is not None:
            replies.put((meta, body))

    def close(self) -> None:
        with self.lock:
            waiting = list(self.waiting.values())
        for replies in waiting:
            replies.put(None)


def _parsed(meta: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(meta)
    except ValueError:
        raise StorageError("the platform sent an unreadable storage reply") from None
    if not isinstance(reply, dict):
        raise StorageError("the platform sent an unreadable storage reply")
    return reply


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("status") != "ok":
        error = _ERRORS.get(reply.get("error", ""), StorageError)
        raise error(reply.get("message") or "storage call failed")
    return reply


class Storage:
    """``context.storage``: get, get_range, put, delete, list, exists and a file-like open."""

    ObjectNotFound = ObjectNotFound
    StoreUnavailable = StoreUnavailable
    AccessDenied = AccessDenied
    StorageError = StorageError

    def __init__(self, link: StorageLink | None, missing: str = "") -> None:
        self._link = link
        self._missing = missing or (
            "this server has no object store (start it with --storage s3://HOST:PORT)"
        )

    def _call(self, request: dict[str, Any], body: bytes = b"") -> tuple[dict[str, Any], bytes]:
        if self._link is None:
            raise StorageError(self._missing)
        if not isinstance(request.get("bucket"), str) or not isinstance(request.get("key", ""), str):
            raise InvalidRequest("bucket and key must be strings")
        return self._link.call(request, body)

    def get(self, bucket: str, key: str) -> bytes:
        """The whole object."""
        return self._call({"op": "get", "bucket": bucket, "key": key})[1]

    def get_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (fewer at its end)."""
        if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start < end:
            raise InvalidRequest(f"a range needs integers 0 <= start < end, not {start!r}, {end!r}")
        return self._call({"op": "range", "bucket": bucket, "key": key, "start": start, "end": end})[1]

    def _range_of(self, bucket: str, key: str, start: int, end: int, etag: str) -> bytes:
        """A range of the version ``etag`` (an open file must not mix versions)."""
        reply, data = self._call({"op": "range", "bucket": bucket, "key": key, "start": start, "end": end})
        if reply.get("etag") != etag:
            raise StorageError(f"{bucket}/{key} was overwritten while it was open; open it again")
        return data

    def head(self, bucket: str, key: str) -> ObjectInfo:
        reply, _ = self._call({"op": "head", "bucket": bucket, "key": key})
        return ObjectInfo(key, int(reply["size"]), str(reply["etag"]))

    def put(self, bucket: str, key: str, data: bytes | bytearray | memoryview) -> str:
        """Write the object (through the cache to the store); returns its new ETag."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidRequest(f"put takes bytes, not {type(data).__name__}")
        reply, _ = self._call({"op": "put", "bucket": bucket, "key": key}, bytes(data))
        return str(reply["etag"])

    def delete(self, bucket: str, key: str) -> None:
        self._call({"op": "delete", "bucket": bucket, "key": key})

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.head(bucket, key)
        except ObjectNotFound:
            return False
        return True

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        if not isinstance(prefix, str):
            raise InvalidRequest("prefix must be a string")
        _, body = self._call({"op": "list", "bucket": bucket, "prefix": prefix})
        return [ObjectInfo(str(k), int(s), str(e)) for k, s, e in json.loads(body)]

    def open(self, bucket: str, key: str, *, chunk: int = 8 * 1024 * 1024) -> ObjectReader:
        """A read-only, seekable file over the object, read in ranges of ``chunk`` bytes."""
        return ObjectReader(self, bucket, key, self.head(bucket, key), chunk)


class ObjectReader(io.RawIOBase):
    """A large object as a file: reads become ranged GETs, so it never has to fit in memory at once."""

    def __init__(self, storage: Storage, bucket: str, key: str, info: ObjectInfo, chunk: int) -> None:
        super().__init__()
        self._storage, self._bucket, self._key = storage, bucket, key
        self.etag = info.etag
        size = info.size
        self.size = size
        self._chunk = max(int(chunk), 4096)
        self._position = 0
        self._buffer = b""
        self._buffer_at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        if self._position >= self.size or not len(view):
            return 0
        offset = self._position - self._buffer_at
        if not 0 <= offset < len(self._buffer):
            end = min(self._position + max(self._chunk, len(view)), self.size)
            self._buffer = self._storage._range_of(self._bucket, self._key, self._position, end, self.etag)
            self._buffer_at, offset = self._position, 0
            if not self._buffer:
                return 0
        count = min(len(view), len(self._buffer) - offset)
        view[:count] = self._buffer[offset : offset + count]
        self._position += count
        return count
