"""``strato storage``: the real S3 store strato starts, and the shaping proxy in front of it."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from strato.cli.common import friendly_errors
from strato.storage import ShapingProxy, StoreServer
from strato.storage.proxy import (
    DEFAULT_AGGREGATE,
    DEFAULT_BANDWIDTH,
    DEFAULT_JITTER,
    DEFAULT_LATENCY,
    parse_host_port,
    parse_shaping,
    run,
)

app = typer.Typer(
    help="A real S3 object store on 127.0.0.1 and the shaping proxy (docs/storage.md).", no_args_is_help=True
)

Latency = Annotated[str, typer.Option("--latency", help="one-way delay per chunk, with a unit (10ms)")]
Jitter = Annotated[str, typer.Option("--jitter", help="uniform ± jitter on the latency, with a unit")]
Bandwidth = Annotated[
    str, typer.Option("--bandwidth", help="per connection and direction, e.g. 100MB/s, or unlimited")
]
Aggregate = Annotated[
    str, typer.Option("--aggregate-bandwidth", help="all connections together, per direction, or unlimited")
]


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM, so both end the command through the same clean-up."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
@friendly_errors
def serve(
    directory: Annotated[
        Path, typer.Option("--dir", help="data directory (buckets are its sub-directories)")
    ],
    port: Annotated[int, typer.Option("--port", help="port of the S3 server (0: any free one)")] = 0,
    proxy_port: Annotated[
        int, typer.Option("--proxy-port", help="port of the shaping proxy (0: any free one)")
    ] = 0,
    latency: Latency = DEFAULT_LATENCY,
    jitter: Jitter = DEFAULT_JITTER,
    bandwidth: Bandwidth = DEFAULT_BANDWIDTH,
    aggregate_bandwidth: Aggregate = DEFAULT_AGGREGATE,
    no_shape: Annotated[bool, typer.Option("--no-shape", help="no proxy: only the direct URL")] = False,
) -> None:
    """Start the S3 server (rclone serve s3) and, unless --no-shape, the shaping proxy; run until Ctrl-C."""
    shaping = parse_shaping(latency, jitter, bandwidth, aggregate_bandwidth)
    with StoreServer(directory, port=port) as server:
        typer.echo(f"direct: {server.url}  (data in {server.data_dir}, pid {server.pid})")
        if no_shape:
            typer.echo("Ctrl-C to stop")
            _wait_for_interrupt()
            return
        with ShapingProxy(
            server.url,
            port=proxy_port,
            latency_s=shaping.latency_s,
            jitter_s=shaping.jitter_s,
            bandwidth_bytes_per_s=shaping.bandwidth_bytes_per_s,
            aggregate_bytes_per_s=shaping.aggregate_bytes_per_s,
        ) as proxy:
            typer.echo(f"shaped: {proxy.url}  ({shaping.describe()}, pid {proxy.pid})")
            typer.echo("Ctrl-C to stop")
            _wait_for_interrupt()


@app.command()
@friendly_errors
def proxy(
    upstream: Annotated[str, typer.Option("--upstream", help="HOST:PORT of the store")],
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to accept on (port 0: any free one)")
    ] = "127.0.0.1:0",
    latency: Latency = DEFAULT_LATENCY,
    jitter: Jitter = DEFAULT_JITTER,
    bandwidth: Bandwidth = DEFAULT_BANDWIDTH,
    aggregate_bandwidth: Aggregate = DEFAULT_AGGREGATE,
) -> None:
    """Run the shaping proxy in the foreground (prints `listening HOST:PORT`) until Ctrl-C."""
    shaping = parse_shaping(latency, jitter, bandwidth, aggregate_bandwidth)
    target = parse_host_port(upstream, "--upstream")
    address = parse_host_port(listen, "--listen")
    with contextlib.suppress(KeyboardInterrupt):
        run(address, target, shaping)
