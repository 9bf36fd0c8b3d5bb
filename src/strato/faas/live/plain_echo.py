"""A plain Python HTTP echo server: the floor the lean backend's warm latency is compared with.

It is the least a Python server can do per request over the same kind of socket as the gateway (TCP on
127.0.0.1): the same event loop (uvloop when installed), the same parser (llhttp through ``httptools``),
one write of the request's body back per request, and nothing else (no routing, no instance hop, no
checks beyond the parser's). ``strato faas bench`` measures it with the same load generator, one
connection, closed loop, in the same run as the lean backend.

Run it in its own process (:func:`plain_echo_server` does), never inside the measuring one::

    python -m strato.faas.live.plain_echo --port 0     # prints "serving on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Final, cast

import httptools

from strato.errors import StratoError
from strato.faas.live.loop import die_with_parent, new_event_loop

MAX_BODY: Final = 1 << 20
"""Bodies above this are refused (413) rather than buffered: the server only ever sees bench bodies."""

_HEAD: Final = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "


class _Echo(asyncio.Protocol):
    """One connection: answer each complete request with its own body, in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            self._refuse(b"413 Content Too Large")  # on_body is the one callback that raises
        except httptools.HttpParserError:
            self._refuse(b"400 Bad Request")

    def on_message_begin(self) -> None:
        self.body = []
        self.size = 0

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_BODY:
            # Raised inside the parser's callback: it stops parsing and data_received refuses.
            raise ValueError("body too large")
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None:
            return
        body = b"".join(self.body)
        keep = self.parser.should_keep_alive()
        head = _HEAD + b"%d\r\n" % len(body)
        transport.write(head + (b"\r\n" if keep else b"Connection: close\r\n\r\n") + body)
        if not keep:
            transport.close()

    def _refuse(self, status: bytes) -> None:
        if self.transport is not None:
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self.transport.close()


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, host, port, backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"serving on http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m strato.faas.live.plain_echo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    args = parser.parse_args(argv)
    die_with_parent()
    loop = new_event_loop()
    try:
        loop.run_until_complete(_serve(args.host, args.port))
    except KeyboardInterrupt:
        return 0
    except OSError as error:
        print(f"error: cannot serve on {args.host}:{args.port}: {error.strerror or error}", file=sys.stderr)
        return 2
    finally:
        loop.close()
    return 0


@contextlib.contextmanager
def plain_echo_server(*, timeout_s: float = 30.0) -> Iterator[tuple[str, int]]:
    """Start the echo server in a child process on 127.0.0.1; yield ``(url, pid)``; stop it for sure."""
    env = dict(os.environ)
    # The child must import this very package even from a source checkout that is not installed.
    src_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH")) if p)
    # A file, not a pipe, for its errors: nobody reads them while it serves, and a full pipe would stall it.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "strato.faas.live.plain_echo", "--host", "127.0.0.1", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
        )
        try:
            yield _read_url(process, errors, timeout_s), process.pid
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _read_url(process: subprocess.Popen[bytes], errors: IO[bytes], timeout_s: float) -> str:
    stdout = cast(IO[bytes], process.stdout)
    os.set_blocking(stdout.fileno(), False)
    deadline = time.monotonic() + timeout_s
    seen = b""
    while time.monotonic() < deadline:
        with contextlib.suppress(BlockingIOError, TypeError):
            chunk = stdout.read()
            if chunk:
                seen += chunk
        match = re.search(rb"serving on (http://\S+)\n", seen)
        if match:
            return match.group(1).decode()
        if process.poll() is not None:
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip()
            raise StratoError(f"the plain echo server exited with status {process.returncode}: {said}")
        time.sleep(0.01)
    raise StratoError(f"the plain echo server did not start within {timeout_s:g} s")


if __name__ == "__main__":
    sys.exit(main())
