"""The object store clients: S3Store against the real server (rclone serve s3) and LocalDirStore, with
the same semantics; errors a caller can meet (missing keys, a dead or stalled store, truncated bodies)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from storage_helpers import s3_server  # noqa: F401  (fixture)
from strato.errors import ConfigError
from strato.storage import (
    CorruptObject,
    ObjectNotFound,
    ObjectStore,
    StoreServer,
    StoreUnavailable,
    open_store,
)

T = TypeVar("T")

ODD_KEYS = ["sp ace/ü ñ €.txt", "q?x=1&y=2#h", "plus+percent%20", "star*(paren)[b]{c}", "semi;colon:@!$'~"]


def run(factory: Callable[[], ObjectStore], work: Callable[[ObjectStore], Awaitable[T]]) -> T:
    async def go() -> T:
        store = factory()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture(params=["s3", "dir"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ObjectStore]:
    if request.param == "s3":
        server: StoreServer = request.getfixturevalue("s3_server")
        return lambda: open_store(server.url, timeout_s=10)
    root = tmp_path / "dirstore"
    root.mkdir()
    return lambda: open_store(f"dir://{root}")


def _bucket(request: pytest.FixtureRequest) -> str:
    return "t-" + hashlib.md5(request.node.nodeid.encode()).hexdigest()[:12]


@pytest.mark.system
def test_round_trip_etag_conditional_range_list_delete(
    store_factory: Callable[[], ObjectStore], request: pytest.FixtureRequest
) -> None:
    bucket = _bucket(request)
    payload = os.urandom(100_000)

    async def work(store: ObjectStore) -> None:
        await store.create_bucket(bucket)
        await store.create_bucket(bucket)  # idempotent
        meta = await store.put(bucket, "a/one", payload)
        assert meta.etag == hashlib.md5(payload).hexdigest() and meta.size == len(payload)
        fetched = await store.get(bucket, "a/one")
        assert fetched is not None and fetched.data == payload and fetched.etag == meta.etag
        assert await store.get(bucket, "a/one", if_none_match=meta.etag) is None
        assert await store.get(bucket, "a/one", if_none_match=f'"{meta.etag}"') is None
        other = await store.get(bucket, "a/one", if_none_match="0" * 32)
        assert other is not None and other.data == payload
        part = await store.get(bucket, "a/one", byte_range=(10, 1010))
        assert part is not None and part.data == payload[10:1010] and part.size == len(payload)
        head = await store.head(bucket, "a/one")
        assert (head.size, head.etag) == (len(payload), meta.etag)
        changed = await store.put(bucket, "a/one", b"v2")
        assert changed.etag != meta.etag
        fresh = await store.get(bucket, "a/one", if_none_match=meta.etag)
        assert fresh is not None and fresh.data == b"v2"
        await store.put(bucket, "a/two", b"2")
        await store.put(bucket, "b/three", b"3")
        assert [m.key for m in await store.list(bucket, "a/")] == ["a/one", "a/two"]
        assert [m.key for m in await store.list(bucket, "a/o")] == ["a/one"]
        assert [m.key for m in await store.list(bucket)] == ["a/one", "a/two", "b/three"]
        listed = {m.key: m for m in await store.list(bucket, "a/t")}
        assert listed["a/two"].size == 1 and listed["a/two"].etag == hashlib.md5(b"2").hexdigest()
        await store.delete(bucket, "a/two")
        await store.delete(bucket, "a/two")  # deleting what is gone is fine, as in S3
        with pytest.raises(ObjectNotFound, match="a/two"):
            await store.head(bucket, "a/two")
        with pytest.raises(KeyError):
            await store.get(bucket, "a/two")
        with pytest.raises(ObjectNotFound, match="no bucket"):
            await store.get(bucket + "-missing", "x")
        for key in ODD_KEYS:
            await store.put(bucket, key, key.encode())
            got = await store.get(bucket, key)
            assert got is not None and got.data == key.encode()
            assert key in [m.key for m in await store.list(bucket, key[:3])]

    run(store_factory, work)


@pytest.mark.system
@pytest.mark.slow
def test_a_256_mb_object_round_trips(s3_server: StoreServer) -> None:  # noqa: F811
    block = os.urandom(1 << 20)
    payload = block * 256

    async def work(store: ObjectStore) -> None:
        await store.create_bucket("big")
        meta = await store.put("big", "obj", payload)
        assert meta.size == 256 << 20
        fetched = await store.get("big", "obj")
        assert fetched is not None and fetched.data == payload  # the MD5 check against the ETag passed
        tail = await store.get("big", "obj", byte_range=((256 << 20) - 10, 256 << 20))
        assert tail is not None and tail.data == block[-10:]
        await store.delete("big", "obj")

    run(lambda: open_store(s3_server.url, timeout_s=60), work)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_dead_store_is_unavailable_at_once() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        run(lambda: open_store(f"s3://127.0.0.1:{port}", timeout_s=5), lambda s: s.get("b", "k"))
    assert time.monotonic() - started < 5


class FakeStore:
    """A TCP server on 127.0.0.1 that answers every request with ``answer`` (raw bytes; None: silence)."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)
            connection.recv(65536)
            if self.answer is not None:
                connection.sendall(self.answer)
                connection.close()

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@pytest.fixture()
def fake_store(request: pytest.FixtureRequest) -> Iterator[Callable[[bytes | None], FakeStore]]:
    made: list[FakeStore] = []

    def make(answer: bytes | None) -> FakeStore:
        made.append(FakeStore(answer))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


def test_a_stalled_store_is_unavailable_within_the_timeout(fake_store: Any) -> None:
    fake = fake_store(None)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"within 1s|unavailable"):
        run(lambda: open_store(f"s3://127.0.0.1:{fake.port}", timeout_s=1), lambda s: s.get("b", "k"))
    assert time.monotonic() - started < 4


def test_a_5xx_is_unavailable(fake_store: Any) -> None:
    fake = fake_store(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(StoreUnavailable, match="503"):
        run(lambda: open_store(f"s3://127.0.0.1:{fake.port}", timeout_s=5), lambda s: s.head("b", "k"))


def test_a_truncated_body_is_corrupt(fake_store: Any) -> None:
    head = (
        'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nETag: "0123456789abcdef0123456789abcdef"\r\n'
        "Last-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n"
    )
    fake = fake_store(head.encode() + b"x" * 50)
    with pytest.raises(CorruptObject, match="b/k"):
        run(lambda: open_store(f"s3://127.0.0.1:{fake.port}", timeout_s=5), lambda s: s.get("b", "k"))


def test_a_body_that_does_not_match_its_etag_is_corrupt(fake_store: Any) -> None:
    head = (
        'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "0123456789abcdef0123456789abcdef"\r\n'
        "Last-Modified: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n"
    )
    fake = fake_store(head.encode() + b"hello")
    with pytest.raises(CorruptObject, match="MD5"):
        run(lambda: open_store(f"s3://127.0.0.1:{fake.port}", timeout_s=5), lambda s: s.get("b", "k"))


@pytest.mark.parametrize("url", ["http://127.0.0.1:80", "s3://127.0.0.1", "dir://relative/path", "memory://"])
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ConfigError, match=r"s3://HOST:PORT|dir:///"):
        open_store(url)
