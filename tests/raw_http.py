"""Raw HTTP on real sockets, for tests that must send what no well-behaved client would."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass
class Exchange:
    responses: list[RawResponse]
    closed: bool
    """The server closed the connection (rather than the client giving up waiting)."""
    raw: bytes


class _Collector:
    def __init__(self) -> None:
        self.responses: list[RawResponse] = []
        self.current: RawResponse | None = None
        self.parser: httptools.HttpResponseParser | None = None

    def on_message_begin(self) -> None:
        self.current = RawResponse(0)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.current is not None and self.parser is not None
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.responses.append(self.current)
        self.current = None


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def exchange(url: str, payload: bytes, *, timeout_s: float = 20.0, expect: int | None = None) -> Exchange:
    """Send ``payload`` on one connection and read until the server closes it, ``expect`` responses came
    back, or ``timeout_s`` passed; responses are parsed by llhttp, strictly."""
    collector = _Collector()
    parser = httptools.HttpResponseParser(collector)
    collector.parser = parser
    raw = b""
    closed = False
    with socket.create_connection(address(url), timeout=timeout_s) as sock:
        sock.sendall(payload)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if expect is not None and len(collector.responses) >= expect:
                break
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            raw += data
            parser.feed_data(data)
    return Exchange(collector.responses, closed, raw)


def request(method: str, target: str, *headers: str, body: bytes = b"", close: bool = False) -> bytes:
    """One well-formed request (with Host and Content-Length) to put in a pipeline."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", *headers, f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class InProcessTransport:
    """Just enough of an asyncio transport to drive the server protocol in-process."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.out += chunk

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
