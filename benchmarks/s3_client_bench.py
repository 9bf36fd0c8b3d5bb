"""Which S3 client strato uses: aiobotocore vs obstore (and strato's own S3Store), against the real server.

    .venv/bin/python benchmarks/s3_client_bench.py [--small-n 300] [--big 100MB] [--repeat 5]

Starts a :class:`strato.storage.StoreServer` (rclone serve s3) in a temporary directory, puts a 1 KiB and a
``--big`` object, and prints one row per client: sequential small-GET latency (p50/p99), 16 concurrent
small GETs (operations per second: CPU per request on this 2-core machine), a conditional GET that
answers 304, and the big GET's throughput (median of ``--repeat``). docs/storage.md quotes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from strato.core.units import parse_size_mb
from strato.storage import StoreServer, open_store
from strato.storage.server import ACCESS_KEY, SECRET_KEY

BUCKET = "bench"
SMALL = b"s" * 1024

GetFn = Callable[[str], Awaitable[bytes]]
CondFn = Callable[[str, str], Awaitable[bool]]


async def _aiobotocore(endpoint: str) -> tuple[GetFn, CondFn, Callable[[], Awaitable[None]]]:
    import aiobotocore.session
    from botocore.config import Config
    from botocore.exceptions import ClientError

    session = aiobotocore.session.get_session()
    config = Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 0},
        max_pool_connections=16,
        # A 304's empty body trips the default response checksum wrapper (botocore 1.36+).
        response_checksum_validation="when_required",
        request_checksum_calculation="when_required",
    )
    manager = session.create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=config,
    )
    client: Any = await manager.__aenter__()

    async def get(key: str) -> bytes:
        response = await client.get_object(Bucket=BUCKET, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def not_modified(key: str, etag: str) -> bool:
        try:
            await client.get_object(Bucket=BUCKET, Key=key, IfNoneMatch=f'"{etag}"')
        except ClientError as error:
            return bool(error.response["ResponseMetadata"]["HTTPStatusCode"] == 304)
        return False

    async def close() -> None:
        await manager.__aexit__(None, None, None)

    return get, not_modified, close


async def _obstore(endpoint: str) -> tuple[GetFn, CondFn, Callable[[], Awaitable[None]]]:
    import obstore
    from obstore.exceptions import NotModifiedError
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "timeout": "30s"},
        retry_config={"max_retries": 0},  # type: ignore[typeddict-item]
    )

    async def get(key: str) -> bytes:
        result = await obstore.get_async(store, key)
        return bytes(await result.bytes_async())

    async def not_modified(key: str, etag: str) -> bool:
        try:
            await obstore.get_async(store, key, options={"if_none_match": f'"{etag}"'})
        except NotModifiedError:
            return True
        return False

    async def close() -> None:
        return None

    return get, not_modified, close


async def _strato(endpoint: str) -> tuple[GetFn, CondFn, Callable[[], Awaitable[None]]]:
    store = open_store(endpoint.replace("http://", "s3://"))

    async def get(key: str) -> bytes:
        fetched = await store.get(BUCKET, key)
        assert fetched is not None
        return fetched.data

    async def not_modified(key: str, etag: str) -> bool:
        return await store.get(BUCKET, key, if_none_match=etag) is None

    return get, not_modified, store.close


CLIENTS = {"aiobotocore": _aiobotocore, "obstore": _obstore, "strato S3Store": _strato}


async def _measure(name: str, endpoint: str, big_size: int, small_n: int, repeat: int) -> dict[str, float]:
    get, not_modified, close = await CLIENTS[name](endpoint)
    try:
        for _ in range(20):  # connections, TLS-less handshakes, lazy imports
            await get("small")
        latencies = []
        for _ in range(small_n):
            started = time.perf_counter()
            await get("small")
            latencies.append(time.perf_counter() - started)
        latencies.sort()
        concurrent_n = small_n * 2
        started = time.perf_counter()
        queue = iter(range(concurrent_n))

        async def worker() -> None:
            for _ in queue:
                await get("small")

        await asyncio.gather(*(worker() for _ in range(16)))
        ops = concurrent_n / (time.perf_counter() - started)
        etag = (await open_store(endpoint.replace("http://", "s3://")).head(BUCKET, "small")).etag
        assert await not_modified("small", etag), f"{name}: no 304 for a matching ETag"
        big_times = []
        for _ in range(repeat):
            started = time.perf_counter()
            data = await get("big")
            big_times.append(time.perf_counter() - started)
            assert len(data) == big_size
        return {
            "p50_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
            "ops": ops,
            "big_mb_s": big_size / statistics.median(big_times) / 1e6,
        }
    finally:
        await close()


async def _seed(url: str, big_size: int) -> None:
    store = open_store(url)
    try:
        await store.create_bucket(BUCKET)
        await store.put(BUCKET, "small", SMALL)
        await store.put(BUCKET, "big", bytes(big_size))
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small-n", type=int, default=300, help="sequential small GETs per client")
    parser.add_argument("--big", default="100MB", help="size of the big object (with a unit)")
    parser.add_argument("--repeat", type=int, default=5, help="big GETs per client (median reported)")
    parser.add_argument(
        "--clients", default=",".join(CLIENTS), help="comma-separated subset of " + ", ".join(CLIENTS)
    )
    args = parser.parse_args()
    big_size = round(parse_size_mb(args.big) * 2**20)
    with (
        tempfile.TemporaryDirectory(prefix="strato-s3-bench-") as tmp,
        StoreServer(Path(tmp) / "store") as server,
    ):
        asyncio.run(_seed(server.url, big_size))
        print(
            f"store: rclone serve s3 at {server.endpoint}; small object 1 KiB, "
            f"big object {big_size / 1e6:.0f} MB"
        )
        print(
            f"{'client':<16} {'GET p50 ms':>10} {'GET p99 ms':>10} {'16-conc ops/s':>14} {'big GET MB/s':>13}"
        )
        for name in args.clients.split(","):
            try:
                row = asyncio.run(_measure(name, server.endpoint, big_size, args.small_n, args.repeat))
            except ImportError as error:
                print(f"{name:<16} not installed ({error.name}): pip install {name}")
                continue
            print(
                f"{name:<16} {row['p50_ms']:>10.2f} {row['p99_ms']:>10.2f} "
                f"{row['ops']:>14.0f} {row['big_mb_s']:>13.0f}"
            )


if __name__ == "__main__":
    main()
