"""The shaping proxy: a TCP relay that makes a loopback store behave like a remote one.

Loopback answers in microseconds at GB/s, and this machine's kernel has no ``netem``. Each direction of
each connection delays every chunk by the one-way latency (plus uniform jitter, order kept), so a
request and its response cost about 2x latency, and paces bytes with token buckets: one per connection
and one shared by all connections (the aggregate), in each direction. Reads are 256 KiB so one process
relays several hundred MB/s on 2 cores. toxiproxy does the same but installs from neither PyPI nor
Debian here, and has no aggregate limit.

    python -m strato.storage.proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:8333 \\
        --latency 10ms --jitter 2ms --bandwidth 100MB/s --aggregate-bandwidth 1GB/s

prints ``listening 127.0.0.1:PORT`` once it accepts connections. :class:`ShapingProxy` runs it as a
separate process from Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from strato.core.units import parse_duration, parse_size_mb
from strato.errors import ConfigError
from strato.storage.errors import StoreUnavailable
from strato.storage.server import port_in_use, stop_process

CHUNK = 256 * 1024
# Chunks read ahead per direction: bounds the proxy's memory and gives the sender back-pressure.
QUEUE_CHUNKS = 16
UNLIMITED = ("unlimited", "off", "none")

DEFAULT_LATENCY, DEFAULT_JITTER = "10ms", "2ms"
DEFAULT_BANDWIDTH, DEFAULT_AGGREGATE = "100MB/s", "1GB/s"


@dataclass(frozen=True)
class Shaping:
    """How the proxy shapes traffic. Bandwidths are bytes per second in each direction; None: unlimited."""

    latency_s: float = 0.010
    jitter_s: float = 0.002
    bandwidth_bytes_per_s: float | None = 100e6
    aggregate_bytes_per_s: float | None = 1e9

    def describe(self) -> str:
        def rate(value: float | None) -> str:
            return "unlimited" if value is None else f"{value / 1e6:g}MB/s"

        return (
            f"latency {self.latency_s * 1e3:g}ms ±{self.jitter_s * 1e3:g}ms each way, "
            f"{rate(self.bandwidth_bytes_per_s)} per connection, {rate(self.aggregate_bytes_per_s)} in all"
        )


def parse_duration_with_unit(text: str, flag: str) -> float:
    """Seconds for ``"10ms"``; a bare number is refused (is 10 seconds or milliseconds?)."""
    if not re.search(r"[a-zA-Z]\s*$", str(text)):
        raise ConfigError(f"{flag} {text!r} needs a unit, e.g. 10ms or 0.5s")
    seconds = parse_duration(text)
    return seconds


def parse_bandwidth(text: str, flag: str) -> float | None:
    """Bytes per second for ``"100MB/s"`` (decimal MB; MiB/s too); ``"unlimited"`` gives None."""
    value = str(text).strip()
    if value.lower() in UNLIMITED:
        return None
    if not value.lower().endswith("/s") or not re.search(r"[a-zA-Z]$", value[:-2].strip()):
        raise ConfigError(
            f"{flag} {text!r} needs a size unit per second, e.g. 100MB/s or 1GiB/s (or unlimited)"
        )
    rate = parse_size_mb(value[:-2]) * 2**20
    if rate <= 0:
        raise ConfigError(f"{flag} {text!r} must be above zero (or unlimited)")
    return rate


def parse_shaping(
    latency: str = DEFAULT_LATENCY,
    jitter: str = DEFAULT_JITTER,
    bandwidth: str = DEFAULT_BANDWIDTH,
    aggregate_bandwidth: str = DEFAULT_AGGREGATE,
) -> Shaping:
    return Shaping(
        latency_s=parse_duration_with_unit(latency, "--latency"),
        jitter_s=parse_duration_with_unit(jitter, "--jitter"),
        bandwidth_bytes_per_s=parse_bandwidth(bandwidth, "--bandwidth"),
        aggregate_bytes_per_s=parse_bandwidth(aggregate_bandwidth, "--aggregate-bandwidth"),
    )


def parse_host_port(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT``; an ``s3://`` or ``http://`` URL's host and port are taken as well."""
    plain = re.sub(r"^[a-z0-9]+://", "", text.strip()).rstrip("/")
    host, _, port = plain.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{flag} {text!r} must be HOST:PORT, e.g. 127.0.0.1:8333")
    return host, int(port)


class TokenBucket:
    """Pacing at ``rate`` bytes/s. Starts empty, so n bytes never pass in less than n/rate seconds."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = float(CHUNK)
        self.tokens = 0.0
        self.stamp = time.monotonic()

    def reserve(self, size: int) -> float:
        """Take ``size`` bytes now (going into debt) and return how long to wait before sending them.
        Concurrent takers queue up behind each other's debt, which shares the rate fairly."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= size
        return max(0.0, -self.tokens / self.rate)


class Relay:
    """The proxy's server: one pair of pumps per accepted connection."""

    def __init__(self, upstream: tuple[str, int], shaping: Shaping, seed: int | None = None) -> None:
        self.upstream = upstream
        self.shaping = shaping
        self.random = random.Random(seed)
        aggregate = shaping.aggregate_bytes_per_s
        # One aggregate bucket per direction: requests up and responses down do not share a link budget.
        self.aggregate = {
            "up": TokenBucket(aggregate) if aggregate else None,
            "down": TokenBucket(aggregate) if aggregate else None,
        }
        self.connections = 0

    def _delay(self) -> float:
        jitter = self.shaping.jitter_s
        return max(0.0, self.shaping.latency_s + (self.random.uniform(-jitter, jitter) if jitter else 0.0))

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream, limit=4 * CHUNK)
        except OSError:
            # The store is down: the client sees its connection closed, as it would with the store itself.
            client_writer.close()
            return
        rate = self.shaping.bandwidth_bytes_per_s
        pumps = [
            asyncio.create_task(
                self._pump(client_reader, upstream_writer, TokenBucket(rate) if rate else None, "up")
            ),
            asyncio.create_task(
                self._pump(upstream_reader, client_writer, TokenBucket(rate) if rate else None, "down")
            ),
        ]
        try:
            _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        bucket: TokenBucket | None,
        direction: str,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        aggregate = self.aggregate[direction]

        async def read() -> None:
            due = 0.0
            while True:
                try:
                    chunk = await reader.read(CHUNK)
                except OSError:
                    chunk = b""  # a reset ends this direction like an EOF; the writer side closes
                # Keep order under jitter, as TCP would: a chunk is never due before the one ahead of it.
                due = max(due, time.monotonic() + self._delay())
                await queue.put((due, chunk))
                if not chunk:
                    return

        reading = asyncio.create_task(read())
        try:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                pause = max(
                    bucket.reserve(len(chunk)) if bucket else 0.0,
                    aggregate.reserve(len(chunk)) if aggregate else 0.0,
                )
                if pause > 0:
                    await asyncio.sleep(pause)
                writer.write(chunk)
                await writer.drain()
        finally:
            reading.cancel()

    async def serve(self, host: str, port: int) -> None:
        try:
            server = await asyncio.start_server(self.handle, host, port, limit=4 * CHUNK, reuse_address=True)
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
        bound = server.sockets[0].getsockname()
        print(f"listening {bound[0]}:{bound[1]}", flush=True)
        async with server:
            await server.serve_forever()


def run(listen: tuple[str, int], upstream: tuple[str, int], shaping: Shaping) -> None:
    """Relay until interrupted (the caller turns KeyboardInterrupt/SIGTERM into an exit)."""
    relay = Relay(upstream, shaping)
    try:
        import uvloop

        uvloop.run(relay.serve(*listen))
    except ImportError:
        asyncio.run(relay.serve(*listen))


class ShapingProxy:
    """The proxy as a separate process in front of ``upstream`` (``HOST:PORT`` or ``s3://HOST:PORT``).

    ``.url`` is ``s3://127.0.0.1:PORT``. Bandwidths in bytes per second, None for unlimited::

        with StoreServer(tmp / "store") as server, ShapingProxy(server.url, latency_s=0.010) as proxy:
            store = open_store(proxy.url)
    """

    def __init__(
        self,
        upstream: str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        latency_s: float = 0.010,
        jitter_s: float = 0.002,
        bandwidth_bytes_per_s: float | None = 100e6,
        aggregate_bytes_per_s: float | None = 1e9,
        ready_timeout_s: float = 15.0,
    ) -> None:
        self.upstream = parse_host_port(upstream, "upstream")
        self.host = host
        self.requested_port = port
        self.port = port
        self.shaping = Shaping(latency_s, jitter_s, bandwidth_bytes_per_s, aggregate_bytes_per_s)
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        def rate(value: float | None) -> str:
            return "unlimited" if value is None else f"{value / 2**20!r}MiB/s"

        shaping = self.shaping
        return [
            sys.executable, "-m", "strato.storage.proxy",
            "--listen", f"{self.host}:{self.requested_port}",
            "--upstream", f"{self.upstream[0]}:{self.upstream[1]}",
            "--latency", f"{shaping.latency_s!r}s", "--jitter", f"{shaping.jitter_s!r}s",
            "--bandwidth", rate(shaping.bandwidth_bytes_per_s),
            "--aggregate-bandwidth", rate(shaping.aggregate_bytes_per_s),
        ]  # fmt: skip

    def start(self) -> ShapingProxy:
        if self.process is not None:
            raise ConfigError(f"the shaping proxy is already running at {self.url}")
        if self.requested_port and port_in_use(self.host, self.requested_port):
            raise ConfigError(
                f"port {self.requested_port} on {self.host} is in use: choose another, or 0 for any free one"
            )
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        line = self._first_line()
        match = re.fullmatch(r"listening (\S+):(\d+)", line)
        if match is None:
            stop_process(self.process)
            error = (
                (self.process.stderr.read() if self.process.stderr else b"").decode(errors="replace").strip()
            )
            self.process = None
            raise StoreUnavailable(
                f"the shaping proxy did not start: {error.splitlines()[-1] if error else line!r}"
            )
        self.port = int(match.group(2))
        return self

    def _first_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(self.ready_timeout_s):
                return ""
        return self.process.stdout.readline().decode(errors="replace").strip()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
            self.process = None

    def __enter__(self) -> ShapingProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m strato.storage.proxy",
        description="Shape TCP traffic to an S3 store (docs/storage.md).",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT to accept on (port 0: any free one)"
    )
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the store")
    parser.add_argument("--latency", default=DEFAULT_LATENCY, help="one-way delay per chunk, with a unit")
    parser.add_argument(
        "--jitter", default=DEFAULT_JITTER, help="uniform ± jitter on the latency, with a unit"
    )
    parser.add_argument(
        "--bandwidth", default=DEFAULT_BANDWIDTH, help="per connection and direction, e.g. 100MB/s"
    )
    parser.add_argument(
        "--aggregate-bandwidth", default=DEFAULT_AGGREGATE, help="all connections together, per direction"
    )
    args = parser.parse_args(argv)
    try:
        shaping = parse_shaping(args.latency, args.jitter, args.bandwidth, args.aggregate_bandwidth)
        listen = parse_host_port(args.listen, "--listen")
        upstream = parse_host_port(args.upstream, "--upstream")
        run(listen, upstream, shaping)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    # SIGTERM (ShapingProxy.stop) ends the process like Ctrl-C: no traceback.
    import signal

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    sys.exit(main())
