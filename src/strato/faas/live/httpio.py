"""A small HTTP/1.1 server and client on asyncio protocols, shared by every hop of the live platform.

Both backends use this same code for the client-facing gateway, and the faasd-like backend also uses it
for each of its internal hops (gateway -> provider -> watchdog -> function), so the comparison between
them measures the number of hops, not the quality of two different HTTP stacks.

Only what the platform needs: ``Content-Length`` and chunked request bodies, keep-alive, pipelined
requests answered in order, a body-size limit checked before the body is read (413), and a client
connection pool with one request in flight per connection.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from strato.faas.live.frames import HOP_BY_HOP, REASONS

MAX_HEAD_BYTES = 64 * 1024


class HttpError(Exception):
    """A request the server answers with an error status instead of dispatching it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool = True
    head: bytes = b""
    """The request line and header lines exactly as received, for hops that pass them through."""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@dataclass(slots=True)
class RawResponse:
    """A response that arrives already encoded (the lean backend's instances encode their own)."""

    status: int
    payload: bytes


AnyResponse = Response | RawResponse


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, [("Content-Type", "application/json"), *(headers or [])])


def error_response(status: int, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": message, "status": status, **extra})


def _parse_headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"malformed header line {line[:60]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def encode_response(response: Response, *, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}"]
    for name, value in response.headers:
        if name.lower() not in HOP_BY_HOP:
            head.append(f"{name}: {value}")
    head.append(f"Content-Length: {len(response.body)}")
    if not keep_alive:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


def encode_request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | dict[str, str],
    body: bytes,
    host: str = "localhost",
) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    head.extend(
        f"{name}: {value}"
        for name, value in items
        if name.lower() not in HOP_BY_HOP and name.lower() != "host"
    )
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class _ChunkedDecoder:
    """Incremental decoder of a chunked body; ``feed`` returns (body, rest) once complete."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, buffer: bytearray) -> tuple[bytes, int] | None:
        position = 0
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(400, "malformed chunk size") from None
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if buffer[line_end : line_end + 4] == b"\r\n\r\n":
                    trailer_end = line_end
                if trailer_end < 0:
                    return None
                return b"".join(self.parts), trailer_end + 4
            if self.size + size > self.limit:
                raise HttpError(413, f"request body exceeds the limit of {self.limit} bytes")
            chunk_start = line_end + 2
            if len(buffer) < chunk_start + size + 2:
                return None
            self.parts.append(bytes(buffer[chunk_start : chunk_start + size]))
            self.size += size
            position = chunk_start + size + 2
            del buffer[:position]
            position = 0


Handler = Callable[[Request], "AnyResponse | Awaitable[AnyResponse]"]
"""A route answers at once (a Response) or later (a future or coroutine of one)."""


class ServerProtocol(asyncio.Protocol):
    """One client connection: parse requests, call the handler, answer in order."""

    def __init__(self, handler: Handler, *, max_body: int, tracker: ConnectionTracker) -> None:
        self.handler = handler
        self.max_body = max_body
        self.tracker = tracker
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closing = False
        self.pending: tuple[str, str, dict[str, str], bool, bytes] | None = None
        self.body_length = 0
        self.chunked: _ChunkedDecoder | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.tracker.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tracker.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def _next(self) -> None:
        try:
            request = self._parse()
        except HttpError as error:
            self._answer(error_response(error.status, error.message), keep_alive=False)
            return
        if request is None:
            if len(self.buffer) > MAX_HEAD_BYTES and self.pending is None:
                self._answer(error_response(431, "request head too large"), keep_alive=False)
            return
        self.busy = True
        self.tracker.in_flight += 1
        try:
            result = self.handler(request)
        except Exception as error:  # the server must answer whatever a route does
            result = _internal_error(error)
        if isinstance(result, Response | RawResponse):
            self._done(request, result)
            return
        # A future resolves through a callback: no task, which matters on the gateway's hot path.
        asyncio.ensure_future(result).add_done_callback(lambda outcome: self._done(request, outcome))

    def _parse(self) -> Request | None:
        if self.pending is None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return None
            head = bytes(self.buffer[:head_end])
            lines = head.split(b"\r\n")
            del self.buffer[: head_end + 4]
            parts = lines[0].split(b" ")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                raise HttpError(400, "malformed request line")
            headers = _parse_headers(lines[1:])
            method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
            connection = headers.get("connection", "").lower()
            keep_alive = connection != "close" if parts[2] == b"HTTP/1.1" else connection == "keep-alive"
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.chunked = _ChunkedDecoder(self.max_body)
                self.body_length = -1
            else:
                try:
                    self.body_length = int(headers.get("content-length", "0"))
                except ValueError:
                    raise HttpError(400, "malformed Content-Length") from None
                if self.body_length < 0:
                    raise HttpError(400, "negative Content-Length")
                if self.body_length > self.max_body:
                    raise HttpError(
                        413,
                        f"request body of {self.body_length} bytes exceeds the limit of "
                        f"{self.max_body} bytes",
                    )
            self.pending = (method, target, headers, keep_alive, head)
        method, target, headers, keep_alive, head = self.pending
        if self.chunked is not None:
            decoded = self.chunked.feed(self.buffer)
            if decoded is None:
                return None
            body, consumed = decoded
            del self.buffer[:consumed]
            self.chunked = None
        else:
            if len(self.buffer) < self.body_length:
                return None
            body = bytes(self.buffer[: self.body_length])
            del self.buffer[: self.body_length]
        self.pending = None
        return Request(method, target, headers, body, keep_alive, head)

    def _done(self, request: Request, outcome: AnyResponse | asyncio.Future[AnyResponse]) -> None:
        self.tracker.in_flight -= 1
        response: AnyResponse
        if isinstance(outcome, Response | RawResponse):
            response = outcome
        elif outcome.cancelled():
            response = error_response(503, "the request was cancelled (server shutting down)")
        elif outcome.exception() is not None:
            response = _internal_error(outcome.exception())
        else:
            response = outcome.result()
        self.busy = False
        keep_alive = request.keep_alive and not self.closing
        self._answer(response, keep_alive=keep_alive)
        if keep_alive and self.buffer and self.transport is not None:
            self._next()

    def _answer(self, response: AnyResponse, *, keep_alive: bool) -> None:
        if self.transport is None:
            return
        if isinstance(response, RawResponse):
            # Without keep-alive the closed connection tells the client the response is complete.
            self.transport.write(response.payload)
        else:
            self.transport.write(encode_response(response, keep_alive=keep_alive))
        if not keep_alive:
            self.transport.close()


def _internal_error(error: BaseException | None) -> Response:
    return error_response(500, f"internal error: {type(error).__name__}: {error}")


class ConnectionTracker:
    """Open connections and requests in flight, for graceful shutdown."""

    def __init__(self) -> None:
        self.connections: set[ServerProtocol] = set()
        self.in_flight = 0

    async def drain(self, timeout_s: float) -> bool:
        for connection in list(self.connections):
            connection.close_when_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self.in_flight == 0


class ConnectionClosed(ConnectionError):
    """The peer closed the connection before answering."""


class ClientProtocol(asyncio.Protocol):
    """One client connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.head: tuple[int, list[tuple[str, str]], int, bool] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionClosed("connection closed before the response"))

    def send(self, payload: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.head is None:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            lines = bytes(self.buffer[:head_end]).split(b"\r\n")
            del self.buffer[: head_end + 4]
            status = int(lines[0].split(b" ", 2)[1])
            headers: list[tuple[str, str]] = []
            length = 0
            keep_alive = True
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                key = name.decode("latin-1")
                text = value.strip().decode("latin-1")
                lowered = key.lower()
                if lowered == "content-length":
                    length = int(text)
                elif lowered == "connection" and text.lower() == "close":
                    keep_alive = False
                elif lowered not in HOP_BY_HOP:
                    headers.append((key, text))
            self.head = (status, headers, length, keep_alive)
        status, headers, length, keep_alive = self.head
        if len(self.buffer) < length:
            return
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        self.head = None
        waiter, self.waiter = self.waiter, None
        if not keep_alive and self.transport is not None:
            self.closed = True
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, body, headers))


Connector = Callable[[], Awaitable[tuple[asyncio.BaseTransport, ClientProtocol]]]


class ClientPool:
    """Keep-alive connections to one upstream, reused as a reverse proxy does."""

    def __init__(self, connect: Connector, *, host: str = "localhost") -> None:
        self.connect = connect
        self.host = host
        self.idle: deque[ClientProtocol] = deque()

    @classmethod
    def tcp(cls, host: str, port: int) -> ClientPool:
        async def connect() -> tuple[asyncio.BaseTransport, ClientProtocol]:
            return await asyncio.get_running_loop().create_connection(ClientProtocol, host, port)

        return cls(connect, host=f"{host}:{port}")

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | dict[str, str], body: bytes
    ) -> Response:
        payload = encode_request(method, target, headers, body, self.host)
        connection = await self._acquire()
        try:
            response = await connection.send(payload)
        except BaseException:
            # A cancelled or failed exchange leaves the connection in an unknown state: never reuse it.
            if connection.transport is not None:
                connection.transport.close()
            raise
        if not connection.closed:
            self.idle.append(connection)
        return response

    async def _acquire(self) -> ClientProtocol:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        _, protocol = await self.connect()
        return protocol

    def close(self) -> None:
        while self.idle:
            connection = self.idle.pop()
            if connection.transport is not None:
                connection.transport.close()
