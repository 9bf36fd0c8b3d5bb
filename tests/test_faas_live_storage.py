"""Storage through the live platform: ``context.storage`` in real instances, the node's broker, the
Faa$T cache over a real S3 server, and what goes wrong (the store down, writes behind the cache, bad
calls, instances dying)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from live_helpers import Server, running_server, write_function
from storage_helpers import running_proxy, s3_server  # noqa: F401  (a fixture)
from strato.faas.cache.simulator import simulate_cache
from strato.storage import open_store
from strato.traces.blob import AccessTrace

pytestmark = pytest.mark.system

OPS = """
import json

def handle(event, context):
    call = event.json()
    storage = context.storage
    op = call["op"]
    try:
        if op == "get":
            data = storage.get(call["bucket"], call["key"])
            return {"data": data.decode("latin-1"), "size": len(data)}
        if op == "range":
            data = storage.get_range(call["bucket"], call["key"], call["start"], call["end"])
            return {"data": data.decode("latin-1")}
        if op == "put":
            return {"etag": storage.put(call["bucket"], call["key"], call["data"].encode("latin-1"))}
        if op == "delete":
            storage.delete(call["bucket"], call["key"])
            return {"deleted": True}
        if op == "exists":
            return {"exists": storage.exists(call["bucket"], call["key"])}
        if op == "list":
            return {"keys": [info.key for info in storage.list(call["bucket"], call.get("prefix", ""))]}
        if op == "open":
            with storage.open(call["bucket"], call["key"], chunk=call.get("chunk", 4096)) as file:
                file.seek(call["seek"])
                return {"data": file.read(call["n"]).decode("latin-1")}
        if op == "sleep":
            import time
            time.sleep(call["s"])
            return {"slept": call["s"]}
        if op == "sizes":
            return {"sizes": [len(storage.get(call["bucket"], key)) for key in call["keys"]]}
    except KeyError as error:
        return {"error": type(error).__name__, "keyerror": True, "message": str(error)}, 404
    except context.storage.StoreUnavailable:
        raise  # uncaught: the platform answers 503
    except context.storage.StorageError as error:
        return {"error": type(error).__name__, "message": str(error)}, 400
    return {"error": "unknown op"}, 400
"""

BUCKET = "strato-test"


def _call(server: Server, name: str, **call: Any) -> tuple[int, dict[str, Any]]:
    client = server.client()
    try:
        result = client.invoke(name, json.dumps(call).encode())
    finally:
        client.close()
    return result.status, json.loads(result.body)


def _ok(server: Server, name: str, **call: Any) -> dict[str, Any]:
    status, answer = _call(server, name, **call)
    assert status == 200, (status, answer)
    return answer


def _cache(server: Server, name: str) -> dict[str, Any]:
    stats: dict[str, Any] = server.client().stats()["storage"]["apps"][name]
    return stats


def _put_direct(url: str, bucket: str, key: str, data: bytes) -> None:
    async def go() -> None:
        store = open_store(url)
        try:
            await store.create_bucket(bucket)
            await store.put(bucket, key, data)
        finally:
            await store.close()

    asyncio.run(go())


def _get_direct(url: str, bucket: str, key: str) -> bytes:
    async def go() -> bytes:
        store = open_store(url)
        try:
            fetched = await store.get(bucket, key)
            assert fetched is not None
            return fetched.data
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture()
def ops_dir(tmp_path: Path) -> Path:
    return write_function(tmp_path, "storage-ops", OPS)


@pytest.fixture()
def serve_with(tmp_path: Path, s3_server: Any) -> Iterator[Any]:  # noqa: F811
    """Start a server against the shared S3 server with the given cache flags."""
    opened: list[Any] = []

    def start(*flags: str, url: str | None = None) -> Server:
        manager = running_server(
            tmp_path / f"run{len(opened)}" / "state", "--storage", url or s3_server.url, *flags
        )
        server = manager.__enter__()
        opened.append(manager)
        return server

    _put_direct(s3_server.url, BUCKET, "seed", b"seed")
    yield start
    for manager in reversed(opened):
        manager.__exit__(None, None, None)


def _deploy(
    server: Server, name: str, directory: Path, *, buckets: tuple[str, ...] = (BUCKET,), **options: Any
) -> None:
    options.setdefault("memory", "256Mi")
    server.client().deploy(name, directory=directory, buckets=list(buckets), **options)


def test_handler_api_round_trip_through_a_real_store(serve_with: Any, ops_dir: Path, s3_server: Any) -> None:  # noqa: F811
    server = serve_with("--cache", "faast")
    _deploy(server, "ops", ops_dir)
    key = "dir/odd key ä+%#?&=.bin"
    etag = _ok(server, "ops", op="put", bucket=BUCKET, key=key, data="hello\x00world")["etag"]
    assert etag
    assert _ok(server, "ops", op="get", bucket=BUCKET, key=key)["data"] == "hello\x00world"
    assert _ok(server, "ops", op="range", bucket=BUCKET, key=key, start=6, end=11)["data"] == "world"
    assert _ok(server, "ops", op="open", bucket=BUCKET, key=key, seek=3, n=4, chunk=4096)["data"] == "lo\x00w"
    assert key in _ok(server, "ops", op="list", bucket=BUCKET, prefix="dir/")["keys"]
    assert _ok(server, "ops", op="exists", bucket=BUCKET, key=key)["exists"] is True
    _ok(server, "ops", op="delete", bucket=BUCKET, key=key)
    assert _ok(server, "ops", op="exists", bucket=BUCKET, key=key)["exists"] is False
    status, answer = _call(server, "ops", op="get", bucket=BUCKET, key=key)
    assert status == 404 and answer["keyerror"] and key in answer["message"]


@pytest.mark.parametrize("mode", ["off", "lru", "faast"])
def test_the_same_handler_runs_with_every_cache_mode(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
    mode: str,
) -> None:
    payload = bytes(range(256)) * 64
    _put_direct(s3_server.url, BUCKET, f"mode-{mode}", payload)
    server = serve_with("--cache", mode)
    _deploy(server, "ops", ops_dir)
    for _ in range(3):
        answer = _ok(server, "ops", op="get", bucket=BUCKET, key=f"mode-{mode}")
        assert answer["data"].encode("latin-1") == payload
    storage = server.client().stats()["storage"]
    assert storage["cache"] == mode
    if mode == "off":
        assert "hits" not in storage["apps"]["ops"]
    else:
        stats = storage["apps"]["ops"]
        assert (stats["misses"], stats["hits"], stats["validations"]) == (1, 2, 2)


def test_strong_consistency_never_serves_a_write_made_behind_the_cache(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    _put_direct(s3_server.url, BUCKET, "behind", b"v1")
    strong = serve_with("--cache", "faast")
    relaxed = serve_with("--cache", "faast", "--consistency", "relaxed:1h")
    for server in (strong, relaxed):
        _deploy(server, "ops", ops_dir)
        assert _ok(server, "ops", op="get", bucket=BUCKET, key="behind")["data"] == "v1"
    _put_direct(s3_server.url, BUCKET, "behind", b"v2")
    assert _ok(strong, "ops", op="get", bucket=BUCKET, key="behind")["data"] == "v2"
    assert _cache(strong, "ops")["stale_validations"] == 1
    # Relaxed consistency is what it says: the cached version until its TTL runs out.
    assert _ok(relaxed, "ops", op="get", bucket=BUCKET, key="behind")["data"] == "v1"
    # Deleted behind the cache: strong consistency reports it missing.
    _ok(relaxed, "ops", op="delete", bucket=BUCKET, key="behind")
    status, answer = _call(strong, "ops", op="get", bucket=BUCKET, key="behind")
    assert status == 404 and answer["keyerror"]


def test_unload_drops_the_cache_and_faast_prewarms_it_on_reload(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    keys = [f"warm/{index}" for index in range(6)]
    for index, key in enumerate(keys):
        _put_direct(s3_server.url, BUCKET, key, bytes([index]) * 50_000)
    results = {}
    for mode in ("lru", "faast"):
        server = serve_with("--cache", mode)
        _deploy(server, "ops", ops_dir)
        for _ in range(2):
            assert _ok(server, "ops", op="sizes", bucket=BUCKET, keys=keys)["sizes"] == [50_000] * 6
        assert server.client().unload("ops") == 1
        stats = _cache(server, "ops")
        assert stats["unload_dropped_bytes"] == 300_000 and stats["used_bytes"] == 0
        assert _ok(server, "ops", op="sizes", bucket=BUCKET, keys=keys)["sizes"] == [50_000] * 6
        results[mode] = _cache(server, "ops")
    assert results["lru"]["prewarm_hits"] == 0 and results["lru"]["misses"] == 12
    assert results["faast"]["prewarm_inserts"] == 6
    assert results["faast"]["prewarm_hits"] == 6 and results["faast"]["misses"] == 6


def test_bad_calls_are_refused_with_a_clear_error(serve_with: Any, ops_dir: Path) -> None:
    server = serve_with("--cache", "faast")
    _deploy(server, "ops", ops_dir)
    status, answer = _call(server, "ops", op="get", bucket="other-bucket", key="x")
    assert (
        status == 400 and answer["error"] == "AccessDenied" and "--bucket other-bucket" in answer["message"]
    )
    status, answer = _call(server, "ops", op="get", bucket=BUCKET, key="bad\nkey")
    assert status == 400 and "control characters" in answer["message"]
    status, answer = _call(server, "ops", op="get", bucket="Not_A_Bucket", key="x")
    assert status == 400 and answer["error"] == "InvalidRequest"
    status, answer = _call(server, "ops", op="get", bucket=BUCKET, key="k" * 1025)
    assert status == 400 and "1024 bytes" in answer["message"]


def test_objects_larger_than_the_cache_are_served_from_the_store(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    big = np.random.default_rng(1).bytes(300_000)
    _put_direct(s3_server.url, BUCKET, "big", big)
    server = serve_with("--cache", "lru", "--cache-size", "100KiB")
    _deploy(server, "ops", ops_dir)
    for _ in range(2):
        assert _ok(server, "ops", op="get", bucket=BUCKET, key="big")["data"].encode("latin-1") == big
    stats = _cache(server, "ops")
    assert stats["misses"] == 2 and stats["hits"] == 0 and stats["used_bytes"] == 0


def test_store_down_answers_503_in_time_and_service_resumes(
    tmp_path: Path,
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    _put_direct(s3_server.url, BUCKET, "outage", b"still here")
    with running_proxy(s3_server.url) as proxy:
        url, port = proxy.url, proxy.port
        server = serve_with("--cache", "faast", url=url)
        _deploy(server, "ops", ops_dir, timeout="20s")
        assert _ok(server, "ops", op="get", bucket=BUCKET, key="outage")["data"] == "still here"
    started = time.monotonic()
    status, answer = _call(server, "ops", op="get", bucket=BUCKET, key="outage")
    assert status == 503 and "object store unavailable" in answer["error"], answer
    assert time.monotonic() - started < 20
    with running_proxy(s3_server.url, port=port):
        assert _ok(server, "ops", op="get", bucket=BUCKET, key="outage")["data"] == "still here"


def test_a_killed_instance_takes_its_shard_and_nothing_wrong_is_served(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    keys = [f"kill/{index}" for index in range(32)]
    for index, key in enumerate(keys):
        _put_direct(s3_server.url, BUCKET, key, bytes([index + 1]) * 1000)
    server = serve_with("--cache", "lru")
    _deploy(server, "ops", ops_dir, maxConcurrency=4)
    # Four calls held at once: four instances, four shards (whatever the machine's speed).
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: _ok(server, "ops", op="sleep", s=1.0), range(4)))
    for key in keys:
        _ok(server, "ops", op="get", bucket=BUCKET, key=key)
    before = _cache(server, "ops")
    assert before["shards"] == 4 and before["objects"] == 32, before
    victim = server.client().describe("ops")["instances"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _cache(server, "ops")["shards"] != 3:  # the node has seen the death
        assert time.monotonic() < deadline, "the node never noticed the killed instance"
        time.sleep(0.05)
    before = _cache(server, "ops")
    for index, key in enumerate(keys):
        assert _ok(server, "ops", op="get", bucket=BUCKET, key=key)["data"] == chr(index + 1) * 1000
    after = _cache(server, "ops")
    # The victim's shard held some of the 32 objects (1 in 4 billion that it held none): they went with
    # it and were read again from the store, the rest were still served from the other shards.
    dropped = before["unload_drops"]
    assert 0 < dropped < 32 and after["shards"] == 3
    assert after["misses"] - before["misses"] == dropped and after["hits"] - before["hits"] == 32 - dropped


def test_concurrent_readers_and_writers_never_read_an_older_version(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    """64 concurrent calls through two apps and directly on the store; a checker over the history: no
    read returns a version older than the last write of its key that completed before the read began."""
    keys = ["race/a", "race/b", "race/c", "race/d"]
    for key in keys:
        _put_direct(s3_server.url, BUCKET, key, b"0")
    server = serve_with("--cache", "faast")
    for name in ("app-a", "app-b"):
        _deploy(server, name, ops_dir, maxConcurrency=64, concurrency=4)
    completed: dict[str, list[tuple[float, int]]] = {key: [(0.0, 0)] for key in keys}
    reads: list[tuple[str, float, int]] = []
    lock = threading.Lock()
    versions = {key: 0 for key in keys}
    key_locks = {key: threading.Lock() for key in keys}

    def writer(worker: int) -> None:
        for round_ in range(6):
            key = keys[(worker + round_) % len(keys)]
            with key_locks[key]:  # one write per key at a time: versions of a key are totally ordered
                versions[key] += 1
                version = versions[key]
                how = (worker + round_) % 3
                if how == 2:
                    _put_direct(s3_server.url, BUCKET, key, str(version).encode())
                else:
                    app = "app-a" if how == 0 else "app-b"
                    _ok(server, app, op="put", bucket=BUCKET, key=key, data=str(version))
                with lock:
                    completed[key].append((time.monotonic(), version))

    def reader(worker: int) -> None:
        for round_ in range(8):
            key = keys[(worker * 7 + round_) % len(keys)]
            app = "app-a" if (worker + round_) % 2 else "app-b"
            began = time.monotonic()
            value = int(_ok(server, app, op="get", bucket=BUCKET, key=key)["data"])
            with lock:
                reads.append((key, began, value))

    with ThreadPoolExecutor(64) as pool:
        futures = [pool.submit(writer, worker) for worker in range(8)]
        futures += [pool.submit(reader, worker) for worker in range(56)]
        for future in futures:
            future.result()
    assert len(reads) == 56 * 8
    violations = []
    for key, began, value in reads:
        floor = max(version for done, version in completed[key] if done < began)
        if value < floor:
            violations.append((key, began, value, floor))
    assert not violations, violations[:5]
    stats = [_cache(server, name) for name in ("app-a", "app-b")]
    assert sum(s["hits"] for s in stats) > 0 and sum(s["stale_validations"] for s in stats) > 0


def test_the_simulator_and_the_live_cache_agree_on_the_hit_ratio(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    rng = np.random.default_rng(7)
    names = [f"agree/{index}" for index in range(12)]
    sizes = rng.integers(5_000, 30_000, size=len(names))
    for name, size in zip(names, sizes, strict=True):
        _put_direct(s3_server.url, BUCKET, name, rng.bytes(int(size)))
    sequence = np.minimum(rng.zipf(1.4, size=120) - 1, len(names) - 1)
    capacity = 64 * 1024
    server = serve_with("--cache", "lru", "--cache-size", "64KiB")
    _deploy(server, "ops", ops_dir, maxConcurrency=1)
    for index in sequence:
        _ok(server, "ops", op="sizes", bucket=BUCKET, keys=[names[index]])
    live = _cache(server, "ops")
    trace = AccessTrace(
        time_s=np.arange(len(sequence), dtype=np.float64),
        app=np.zeros(len(sequence), dtype=np.int32),
        obj=sequence.astype(np.int64),
        size_bytes=sizes[sequence].astype(np.int64),
        apps=("ops",),
        objects=tuple(f"{BUCKET}/{name}" for name in names),
    )
    simulated = simulate_cache(trace, cache_bytes_per_app=capacity, policy="lru").total
    assert live["evictions"] > 0, "the sequence must overflow the cache for the comparison to mean something"
    assert (live["hits"], live["hits"] + live["misses"]) == (simulated.hits, simulated.accesses)
    assert live["evictions"] == simulated.evictions


FORGER = """
import json, struct

HEADER = struct.Struct("!IBII")
STORAGE, STORAGE_REPLY = 20, 21

def handle(event, context):
    link = context.storage._link  # what any handler can reach: its own end of the control socket
    what = event.text
    if what == "oversized":
        link.sock.sendall(HEADER.pack(1, STORAGE, 2, 1 << 30) + b"{}")
        return "sent"
    if what == "nested":
        meta = b"[" * 60000
        link.sock.sendall(HEADER.pack(7, STORAGE, len(meta), 0) + meta)
        call_id, kind, reply, _ = link.read_frame()
        return {"id": call_id, "kind": kind, "reply": json.loads(reply)}
    if what == "flood":
        call = json.dumps({"op": "get", "bucket": "strato-test", "key": "seed"}).encode()
        link.sock.sendall(b"".join(HEADER.pack(1000 + i, STORAGE, len(call), 0) + call for i in range(100)))
        replies = [link.read_frame() for _ in range(100)]
        errors = [json.loads(meta).get("error") for _, _, meta, _ in replies]
        return {"ok": errors.count(None), "refused": errors.count("invalid"),
                "ids": sorted(call_id for call_id, _, _, _ in replies) == list(range(1000, 1100))}
    return context.storage.get("strato-test", "seed")
"""


def test_a_handler_forging_storage_frames_is_refused_or_stopped(
    tmp_path: Path,
    serve_with: Any,
    s3_server: Any,  # noqa: F811
) -> None:
    """The storage channel is the control socket a handler's code can write to directly: a call too large
    is refused before it is buffered (the instance is stopped), unreadable JSON (nested to blow a
    recursive parser) gets an error answer, and a flood of calls is bounded per instance."""
    forger = write_function(tmp_path, "forger", FORGER)
    with running_proxy(s3_server.url, latency_s=0.2, jitter_s=0.0) as slow:
        server = serve_with("--cache", "off", "--max-object", "1MiB", url=slow.url)
        _deploy(server, "forger", forger)
        client = server.client()
        answer = json.loads(client.invoke("forger", b"nested").body)
        assert answer["id"] == 7 and answer["kind"] == 21
        assert answer["reply"]["error"] == "invalid" and "unreadable" in answer["reply"]["message"]
        flood = json.loads(client.invoke("forger", b"flood").body)
        assert flood == {"ok": 64, "refused": 36, "ids": True}
        assert client.invoke("forger", b"oversized").status == 502
        # A fresh instance serves the next call.
        assert client.invoke("forger", b"").body == b"seed"


def test_a_corrupt_object_is_never_served(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    """An object whose bytes no longer match its ETag (changed on the store's disk) is refused (503),
    and a copy cached before keeps being served, correct, as long as the store's ETag is unchanged."""
    good = b"A" * 4096
    _put_direct(s3_server.url, BUCKET, "rot", good)
    _put_direct(s3_server.url, BUCKET, "rot-cached", good)
    server = serve_with("--cache", "lru")
    _deploy(server, "ops", ops_dir)
    assert _ok(server, "ops", op="get", bucket=BUCKET, key="rot-cached")["data"] == "A" * 4096
    # rclone works an object's MD5 out on its first read and remembers it; a real store records it at
    # the write. Read once so the store knows the good version's ETag, as a real one would.
    _get_direct(s3_server.url, BUCKET, "rot")
    # Bit rot on the store's disk, behind its back (the file's time kept, so the store still announces
    # the ETag it recorded for the good version).
    for key, damaged in (("rot", b"B" * 4096), ("rot-cached", b"B" * 4096)):
        path = s3_server.data_dir / BUCKET / key
        before = path.stat()
        path.write_bytes(damaged)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    status, answer = _call(server, "ops", op="get", bucket=BUCKET, key="rot")
    assert status == 503 and "MD5" in answer["error"], answer
    assert server.client().stats()["storage"]["corrupt_reads"] == 4  # read, then read again 3 times
    assert _ok(server, "ops", op="get", bucket=BUCKET, key="rot-cached")["data"] == "A" * 4096


def test_a_slow_store_is_cut_at_the_function_timeout(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    with running_proxy(s3_server.url, latency_s=5.0, jitter_s=0.0) as slow:
        server = serve_with("--cache", "faast", url=slow.url)
        _deploy(server, "ops", ops_dir, timeout="2s")
        started = time.monotonic()
        status, answer = _call(server, "ops", op="get", bucket=BUCKET, key="seed")
        elapsed = time.monotonic() - started
    # The call is cut just before the function's timeout, so the handler hears why (503), not 504.
    assert status == 503 and "did not answer within 1.5 s" in answer["error"], answer
    assert elapsed < 5.0  # not when the store finally answers


def test_a_read_joining_a_fetch_in_flight_still_sees_a_later_write(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    """Read A misses and goes to the store; the object is then written directly on the store; read B,
    begun after the write, joins A's fetch in flight and must still return the new version."""
    _put_direct(s3_server.url, BUCKET, "join", b"v1")
    with running_proxy(s3_server.url, latency_s=1.0, jitter_s=0.0) as slow:
        server = serve_with("--cache", "faast", url=slow.url)
        _deploy(server, "ops", ops_dir)
        with ThreadPoolExecutor(2) as pool:
            began = time.monotonic()
            first = pool.submit(_ok, server, "ops", op="get", bucket=BUCKET, key="join")
            # A's request reaches the store after 1 s and its answer is back after 2 s: write in between.
            time.sleep(max(0.0, began + 1.5 - time.monotonic()))
            _put_direct(s3_server.url, BUCKET, "join", b"v2")
            second = pool.submit(_ok, server, "ops", op="get", bucket=BUCKET, key="join")
            a, b = first.result()["data"], second.result()["data"]
    assert b == "v2"
    if a != "v1":
        pytest.skip("the machine was too slow for read A to reach the store before the write")


def test_empty_and_missing_objects_in_every_mode(
    serve_with: Any,
    ops_dir: Path,
    s3_server: Any,  # noqa: F811
) -> None:
    _put_direct(s3_server.url, BUCKET, "empty", b"")
    for mode in ("off", "lru", "faast"):
        server = serve_with("--cache", mode)
        _deploy(server, "ops", ops_dir)
        for _ in range(2):
            assert _ok(server, "ops", op="get", bucket=BUCKET, key="empty") == {"data": "", "size": 0}
        status, answer = _call(server, "ops", op="get", bucket=BUCKET, key="no/such/key")
        assert status == 404 and answer["error"] == "ObjectNotFound", answer
