"""The shaping proxy and `strato storage serve` against the real S3 server: latency each way, bandwidth
per connection and in aggregate, an unlimited proxy that stays fast, and the CLI's processes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage_helpers import require_rclone, running_proxy, s3_server  # noqa: F401  (fixture)
from strato.errors import ConfigError
from strato.storage import Fetched, StoreServer, StoreUnavailable, open_store
from strato.storage.proxy import parse_bandwidth, parse_shaping

pytestmark = pytest.mark.system

BUCKET = "proxy-tests"
BIG = 20_000_000


@pytest.fixture(scope="module")
def seeded(s3_server: StoreServer) -> StoreServer:  # noqa: F811
    async def seed() -> None:
        store = open_store(s3_server.url)
        await store.create_bucket(BUCKET)
        await store.put(BUCKET, "big", os.urandom(BIG))
        await store.put(BUCKET, "small", b"tiny")
        await store.close()

    asyncio.run(seed())
    return s3_server


async def _timed_gets(url: str, keys: list[str]) -> list[float]:
    """GET the keys concurrently on separate connections; the seconds each took."""
    stores = [open_store(url, timeout_s=30) for _ in keys]

    async def one(index: int) -> float:
        started = time.perf_counter()
        fetched = await stores[index].get(BUCKET, keys[index])
        assert isinstance(fetched, Fetched) and len(fetched.data) == fetched.size
        return time.perf_counter() - started

    try:
        return list(await asyncio.gather(*(one(i) for i in range(len(keys)))))
    finally:
        for store in stores:
            await store.close()


def test_bandwidth_paces_a_20_mb_get(seeded: StoreServer) -> None:
    with running_proxy(seeded.url, latency_s=0.0, jitter_s=0.0, bandwidth_bytes_per_s=100e6) as proxy:
        (took,) = asyncio.run(_timed_gets(proxy.url, ["big"]))
    assert took >= 0.2  # 20 MB at 100 MB/s; the bucket starts empty, so this cannot come in early


def test_a_small_get_costs_twice_the_latency(seeded: StoreServer) -> None:
    with running_proxy(seeded.url, latency_s=0.05, jitter_s=0.0, bandwidth_bytes_per_s=None) as proxy:
        took = asyncio.run(_timed_gets(proxy.url, ["small"]))
    assert took[0] >= 0.1  # request up 50 ms, response down 50 ms


def test_unlimited_passes_a_20_mb_get_quickly(seeded: StoreServer) -> None:
    unlimited = {
        "latency_s": 0.0,
        "jitter_s": 0.0,
        "bandwidth_bytes_per_s": None,
        "aggregate_bytes_per_s": None,
    }
    with running_proxy(seeded.url, **unlimited) as proxy:
        asyncio.run(_timed_gets(proxy.url, ["big"]))  # warm the server's page cache and MD5
        took = min(asyncio.run(_timed_gets(proxy.url, ["big"]))[0] for _ in range(3))
    # 20 MB at 100 MB/s would take 0.2 s; unshaped it is several times faster even on a busy machine.
    assert took < 0.15, took


def test_the_aggregate_limit_is_shared_by_two_connections(seeded: StoreServer) -> None:
    with running_proxy(
        seeded.url, latency_s=0.0, jitter_s=0.0, bandwidth_bytes_per_s=None, aggregate_bytes_per_s=100e6
    ) as proxy:
        started = time.perf_counter()
        asyncio.run(_timed_gets(proxy.url, ["big", "big"]))
        took = time.perf_counter() - started
    assert took >= 0.4  # 40 MB through one 100 MB/s budget


def test_a_proxy_to_a_dead_store_closes_connections_and_refuses_a_taken_port(seeded: StoreServer) -> None:
    with running_proxy("127.0.0.1:1") as proxy:
        store = open_store(proxy.url, timeout_s=5)
        with pytest.raises(StoreUnavailable):
            asyncio.run(store.get(BUCKET, "small"))
        with pytest.raises(ConfigError, match="in use"), running_proxy(seeded.url, port=proxy.port):
            pass
    with pytest.raises(ConfigError, match="in use"):
        StoreServer(Path("/tmp/unused"), port=seeded.port).start()


def test_values_need_units() -> None:
    assert parse_bandwidth("100MB/s", "--bandwidth") == 100e6
    assert parse_bandwidth("unlimited", "--bandwidth") is None
    for bad in ("100", "100MB", "100/s"):
        with pytest.raises(ConfigError, match="unit"):
            parse_bandwidth(bad, "--bandwidth")
    with pytest.raises(ConfigError, match="--latency '10' needs a unit"):
        parse_shaping(latency="10")


def test_cli_serve_prints_both_urls_and_cleans_up(tmp_path: Path) -> None:
    require_rclone()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "strato",
            "storage",
            "serve",
            "--dir",
            str(tmp_path / "data"),
            "--latency",
            "1ms",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(3)]
    direct = re.search(r"direct: (s3://\S+).*pid (\d+)", lines[0])
    shaped = re.search(r"shaped: (s3://\S+).*pid (\d+)", lines[1])
    assert direct and shaped, lines

    async def round_trip() -> bytes:
        direct_store, shaped_store = open_store(direct.group(1)), open_store(shaped.group(1))
        await direct_store.create_bucket("cli")
        await direct_store.put("cli", "k", b"via direct")
        fetched = await shaped_store.get("cli", "k")
        assert fetched is not None
        return fetched.data

    assert asyncio.run(round_trip()) == b"via direct"
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    for pid in (int(direct.group(2)), int(shaped.group(2))):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
