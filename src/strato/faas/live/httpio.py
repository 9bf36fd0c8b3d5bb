"""The HTTP/1.1 server and client of every hop of the live platform, on asyncio protocols and llhttp.

Both backends use this same code for the client-facing gateway, and the faasd-like backend also uses it
for each of its internal hops (gateway -> provider -> watchdog -> function), so the comparison between
them measures the number of hops, not the quality of two different HTTP stacks.

Parsing is llhttp's (through ``httptools``), in its strict mode: it refuses the request-smuggling shapes a
hand-written parser lets through (both ``Content-Length`` and ``Transfer-Encoding``, signed or
underscored lengths, malformed chunk sizes, missing CRLFs, bare LF, whitespace before a colon). On top of
it this module enforces what llhttp leaves to its user: head and body size limits checked before anything
is buffered, ``chunked`` as the only transfer coding, HTTP/1.0 and 1.1 only, a Host header on 1.1,
origin-form targets, no protocol upgrades; and per connection a header timeout, a body timeout (without
progress), an idle keep-alive timeout, a timeout for responses the client does not read, and a cap on
open connections. Everything a response carries is checked before it is written: status 200-599 (a 1xx
cannot be a final response) and header names and values free of CR, LF and NUL, so nothing an upstream
or a function returns can split a response.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import httptools

from strato.faas.live._leanpath import Lane
from strato.faas.live.completion import Completion
from strato.faas.live.frames import (
    HEADER_NAME,
    HEADER_TEXT,
    HOP_BY_HOP,
    REASONS,
    TOKEN_PATTERN,
    VALUE_PATTERN,
)

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 128
DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024


class HttpError(Exception):
    """A request the server answers with an error status instead of dispatching it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidResponse(ValueError):
    """A response (from an upstream or a function) that cannot be written without corrupting the stream."""


@dataclass(frozen=True)
class ServerLimits:
    """What one client connection may cost the server. ``None`` turns a timeout off (internal hops)."""

    max_body: int = 8 * 1024 * 1024
    max_head: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS
    header_timeout_s: float | None = 10.0
    """From the first byte of a request to the end of its head."""
    body_timeout_s: float | None = 30.0
    """Longest wait for the next piece of a request body."""
    idle_timeout_s: float | None = 30.0
    """A kept-alive connection with nothing in flight is closed after this long."""
    write_timeout_s: float | None = 30.0
    """A response the client stops reading is abandoned after this long without progress."""
    max_connections: int | None = 4096
    internal_hop: bool = False
    """Between the platform's own processes: ``X-Strato-*`` headers pass, and a HEAD response keeps its
    body (the next hop's parser does not know the method, so the framing must not depend on it)."""

    @classmethod
    def internal(cls, max_body: int) -> ServerLimits:
        """Between the platform's own processes: no timeouts (the gateway times invocations out)."""
        return cls(
            max_body=max_body,
            header_timeout_s=None,
            body_timeout_s=None,
            idle_timeout_s=None,
            write_timeout_s=None,
            max_connections=None,
            internal_hop=True,
        )


class Request:
    """A request as llhttp parsed and checked it. ``headers`` (lower-case names, repeated fields joined
    with ", ") is decoded only when asked for: a warm invocation never needs it."""

    __slots__ = ("_fields", "_headers", "authorization", "body", "forward", "keep_alive", "method", "target")

    def __init__(
        self,
        method: str,
        target: str,
        fields: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool = True,
        forward: bytes = b"",
        authorization: bytes | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self._fields = fields
        self._headers: dict[str, str] | None = None
        self.body = body
        self.keep_alive = keep_alive
        self.forward = forward
        """The header lines to pass on to a function (lower-case names, values as received), without
        framing, ``X-Strato-*`` and ``Authorization`` headers; rendered once while parsing."""
        self.authorization = authorization
        """The Authorization header as received (None: absent)."""

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            headers: dict[str, str] = {}
            for name, value in self._fields:
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            self._headers = headers
        return self._headers

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
    """A response from a lean instance: its header lines arrive as one block, checked once
    (:func:`check_header_block`) and written as they are."""

    status: int
    header_block: bytes
    body: bytes


class BodySink(Protocol):
    """Where a streamed body goes (the client connection)."""

    def body_data(self, data: bytes) -> None: ...

    def body_end(self) -> None: ...

    def body_abort(self) -> None: ...


class BodySource(Protocol):
    """Where a streamed body comes from (an instance's socket), with flow control."""

    def attach(self, sink: BodySink) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def abandon(self) -> None:
        """The client is gone: read and drop the rest."""


@dataclass(slots=True)
class StreamedResponse:
    """A response whose body is forwarded as it arrives instead of being buffered whole."""

    status: int
    header_block: bytes
    length: int
    source: BodySource


AnyResponse = Response | RawResponse | StreamedResponse
_IMMEDIATE = (Response, RawResponse, StreamedResponse)


def json_response(status: int, payload: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, [("Content-Type", "application/json"), *(headers or [])])


def error_response(status: int, message: str, **extra: Any) -> Response:
    return json_response(status, {"error": message, "status": status, **extra})


# ---- response checks ------------------------------------------------------------------------------------

HEADER_BLOCK = re.compile(rb"(?:" + TOKEN_PATTERN + rb": " + VALUE_PATTERN + rb"\r\n)*")
"""Header lines as instances send them: ``Name: value`` with visible ASCII only, one space, CRLF."""
_FRAMING_NAMES = "|".join(re.escape(name) for name in sorted(HOP_BY_HOP))
_FRAMING_LINE = re.compile(
    rb"(?:^|\n)(?:" + _FRAMING_NAMES.encode() + rb"|x-strato-" + TOKEN_PATTERN + rb"):", re.IGNORECASE
)


_READ_BY_SERVER = frozenset({b"host", b"authorization", *(name.encode() for name in HOP_BY_HOP)})
"""Fields the server reads itself and never passes on to a function (with ``X-Strato-*``)."""
_METHODS = {
    method.encode(): method for method in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")
}


def check_status(status: int) -> int:
    if not 200 <= status <= 599:
        raise InvalidResponse(f"status {status} is not a final HTTP status (200-599)")
    return status


def check_header_block(block: bytes) -> bytes:
    """Validate header lines from an instance; drop framing and platform headers (the gateway writes its
    own). Raises InvalidResponse for anything that could change how the client reads the stream."""
    if not HEADER_BLOCK.fullmatch(block):
        bad = next(
            (line for line in block.split(b"\r\n")[:-1] if not HEADER_BLOCK.fullmatch(line + b"\r\n")),
            block[-60:],
        )
        raise InvalidResponse(f"malformed or unsafe header line {bad[:80]!r}")
    if _FRAMING_LINE.search(block) is None:
        return block
    kept = [
        line + b"\r\n"
        for line in block.split(b"\r\n")[:-1]
        if not _is_platform_header(line.partition(b":")[0].decode("latin-1"))
    ]
    return b"".join(kept)


def _is_platform_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP or lowered.startswith("x-strato-")


def header_lines(headers: list[tuple[str, str]], *, internal: bool = False) -> bytes:
    """Checked ``Name: value\\r\\n`` lines without framing headers (and without the platform's own
    ``X-Strato-*`` unless the response travels between the platform's processes)."""
    lines = []
    for name, value in headers:
        lowered = name.lower()
        if lowered in HOP_BY_HOP or (not internal and lowered.startswith("x-strato-")):
            continue
        text = value.strip(" \t")
        if not HEADER_NAME.fullmatch(name) or not HEADER_TEXT.fullmatch(text):
            raise InvalidResponse(f"header {name[:60]!r} has a bad name or a value with control characters")
        lines.append(f"{name}: {text}\r\n")
    return "".join(lines).encode("ascii")


def response_head(status: int, block: bytes, length: int | None, *, keep_alive: bool) -> bytes:
    """Status line, checked header lines and the framing the gateway owns. ``length`` None: no
    Content-Length (204, 304)."""
    framing = b"" if length is None else b"Content-Length: %d\r\n" % length
    if not keep_alive:
        framing += b"Connection: close\r\n"
    return status_line(status) + block + framing + b"\r\n"


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d Status\r\n" % status


_LENGTH_LINES = [b"Content-Length: %d\r\n\r\n" % size for size in range(4096)]
"""Most responses are small: their framing line is looked up rather than formatted."""
_STATUS_LINES = {
    status: b"HTTP/1.1 %d %s\r\n" % (status, reason.encode()) for status, reason in REASONS.items()
}


def encode_response(response: Response, *, keep_alive: bool, internal: bool = False) -> bytes:
    """The whole response, checked. Raises InvalidResponse."""
    check_status(response.status)
    head = response_head(
        response.status,
        header_lines(response.headers, internal=internal),
        len(response.body),
        keep_alive=keep_alive,
    )
    return head + response.body


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


def _no_body(method: str, status: int, *, internal: bool) -> tuple[bool, bool]:
    """(send no body bytes, send no Content-Length) for this request method and status."""
    if status in (204, 304):
        return True, True
    return method == "HEAD" and not internal, False


# ---- server ---------------------------------------------------------------------------------------------

Handler = Callable[[Request], "AnyResponse | Awaitable[AnyResponse] | Completion[AnyResponse]"]
"""A route answers at once (a Response) or later (a future, coroutine or completion of one)."""


class LaneClient(Protocol):
    """A client connection as the node sees it when the gateway's lane answered or handed back one of its
    invocations (:class:`ServerProtocol`)."""

    def lane_done(self, keep_alive: bool) -> None: ...

    def lane_demoted(self, method: str, keep_alive: bool, outcome: Completion[AnyResponse]) -> None: ...


_IDLE, _HEAD, _BODY = 0, 1, 2
LANE_HOLD_BYTES = 64 * 1024
LANE_HOLD_READS = 4
"""A plain invocation arriving in more pieces or larger than this is left to llhttp (which streams it)."""
_NO_FIELDS: list[tuple[bytes, bytes]] = []


class ServerProtocol(asyncio.Protocol):
    """One client connection: parse requests strictly, call the handler, answer in order.

    Pipelined requests are parsed ahead into a queue; reading pauses once the queue holds more than one
    maximal request, and while the client does not read what it was sent.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        limits: ServerLimits,
        tracker: ConnectionTracker,
        lane: Lane | None = None,
    ) -> None:
        self.handler = handler
        self.lane = lane
        self.lane_held: bytes | None = None
        """The start of a plain invocation whose body is still arriving, held for the lane."""
        self.lane_reads = 0
        self.limits = limits
        self.tracker = tracker
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request | HttpError] = deque()
        self.queued_bytes = 0
        self.busy = False
        self.closing = False
        self.reading_paused = False
        self.writing_paused = False
        self.stream: StreamedResponse | None = None
        self.stream_keep_alive = False
        self.phase = _IDLE
        self.phase_since = time.monotonic()
        self.head_fed = 0
        """Bytes fed while a head stayed unfinished: llhttp buffers a partial header line itself."""
        self.write_stalled_since: float | None = None
        self.write_buffered = 0
        # The message being parsed.
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._special: dict[bytes, bytes] = {}
        self._large_read = False
        self._forward = b""
        self._body: list[bytes] = []
        self._body_size = 0
        self._now = self.phase_since

    # ---- transport callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        cap = self.limits.max_connections
        if cap is not None and len(self.tracker.connections) >= cap:
            self.tracker.refused += 1
            response = error_response(503, f"the server is at its limit of {cap} open connections")
            self.transport.write(encode_response(response, keep_alive=False))
            self.transport.close()
            self.transport = None
            return
        self.tracker.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tracker.connections.discard(self)
        self.transport = None
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.source.abandon()

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.stream is not None:
            self.stream.source.pause()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.stream is not None:
            self.stream.source.resume()
        elif not self.busy:
            self._next()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or (self.closing and not self.busy and not self.queue):
            return
        self._now = now = time.monotonic()
        lane = self.lane
        # A plain warm invocation goes straight to an instance (C); anything else, or anything the lane is
        # unsure of, is parsed by llhttp below exactly as before.
        # Not while the client leaves its answers unread: like the general path, take no new request then.
        if (
            lane is not None
            and not self.busy
            and self.phase == _IDLE
            and not self.queue
            and not self.closing
            and not self.writing_paused
        ):
            held = self.lane_held
            if held is not None:
                data = held + data
                self.lane_held = None
            # Busy before the lane runs: it may answer before it returns (when it polls the instance).
            self.busy = True
            self.tracker.in_flight += 1
            previous_phase_since, self.phase_since = self.phase_since, now
            try:
                verdict = lane.serve(self, data)
            except Exception as error:  # the server must answer whatever a route does
                self.lane_reads = 0
                self.tracker.in_flight -= 1
                self.busy = False
                self.closing = True
                self._write(_internal_error(error), "GET", keep_alive=False)
                return
            if verdict == 1:
                self.lane_reads = 0
                return
            self.busy = False
            self.tracker.in_flight -= 1
            self.phase_since = previous_phase_since
            if verdict == 2 and len(data) <= LANE_HOLD_BYTES and self.lane_reads < LANE_HOLD_READS:
                # Many clients write the head and the body separately: wait for the rest a little (the
                # body timeout counts from the last piece, as for llhttp).
                self.phase_since = now
                self.lane_held = data
                self.lane_reads += 1
                return
            self.lane_reads = 0
        in_head = self.phase == _HEAD
        # A head that starts and ends within this read is no larger than it: only a large read needs the
        # fields counted (in _take_headers); a head spread over reads is bounded here.
        self._large_read = len(data) > self.limits.max_head
        try:
            self.parser.feed_data(data)
            if self.phase == _HEAD:
                # A head that began in this read and goes on: how much of the read was its start is not
                # known here, so it is marked as spread over reads (its fields are counted when it ends)
                # and bounded from the next read on.
                self.head_fed += len(data) if in_head else 1
                if self.head_fed > self.limits.max_head:
                    raise HttpError(431, f"request head larger than {self.limits.max_head} bytes")
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            self._fail(cause if isinstance(cause, HttpError) else HttpError(400, f"bad request: {cause}"))
        except httptools.HttpParserUpgrade:
            self._fail(HttpError(501, "protocol upgrades and CONNECT are not supported"))
        except httptools.HttpParserError as error:
            self._fail(HttpError(400, f"malformed request: {error}"))
        except HttpError as error:
            self._fail(error)
        if self.phase == _BODY:
            self.phase_since = now
        if self.queued_bytes > self.limits.max_body + self.limits.max_head:
            self._pause_reading()
        if not self.busy:
            self._next()

    # ---- parser callbacks (llhttp) ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.phase = _HEAD
        self.phase_since = self._now
        self.head_fed = 0
        self._url = b""
        self._fields = []
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_head:
            raise HttpError(414, f"request target longer than {self.limits.max_head} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only collected here (this runs once per header on the hot path); checked and decoded below, once
        # per head. A head that arrives whole is at most one read, so the list is bounded by it.
        self._fields.append((name, value))

    def _take_headers(self) -> dict[bytes, bytes]:
        """The fields the server itself reads; renders the lines passed on to a function."""
        fields = self._fields
        limits = self.limits
        if len(fields) > limits.max_headers:
            raise HttpError(431, f"more than {limits.max_headers} header fields")
        if (self._large_read or self.head_fed) and (
            sum(len(name) + len(value) + 4 for name, value in fields) + len(self._url) > limits.max_head
        ):
            raise HttpError(431, f"request head larger than {limits.max_head} bytes")
        special: dict[bytes, bytes] = {}
        forward: list[bytes] = []
        for name, value in fields:
            lowered = name.lower()
            if lowered in _READ_BY_SERVER:
                special[lowered] = special[lowered] + b", " + value if lowered in special else value
                if lowered == b"host":
                    forward.append(b"host: " + value)
            elif not lowered.startswith(b"x-strato-"):
                forward.append(lowered + b": " + value)
        self._forward = b"\r\n".join(forward)
        return special

    def on_headers_complete(self) -> None:
        self._special = headers = self._take_headers()
        parser = self.parser
        if parser.should_upgrade():
            raise HttpError(501, "protocol upgrades and CONNECT are not supported")
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HttpError(505, f"HTTP/{version} is not supported; use HTTP/1.1")
        if version == "1.1" and b"host" not in headers:
            raise HttpError(400, "an HTTP/1.1 request needs a Host header")
        if not self._url.startswith(b"/"):
            raise HttpError(400, "the request target must be a path (origin form)")
        coding = headers.get(b"transfer-encoding")
        if coding is not None and coding.strip().lower() != b"chunked":
            shown = coding[:40].decode("latin-1")
            raise HttpError(501, f"transfer coding {shown!r} is not supported; only chunked is")
        length = headers.get(b"content-length")
        if length is not None and int(length) > self.limits.max_body:
            raise HttpError(
                413, f"request body of {int(length)} bytes exceeds the limit of {self.limits.max_body} bytes"
            )
        self.phase = _BODY
        self.phase_since = self._now

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body:
            raise HttpError(413, f"request body exceeds the limit of {self.limits.max_body} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        method = self.parser.get_method()
        request = Request(
            _METHODS.get(method) or method.decode("ascii"),
            self._url.decode("latin-1"),
            self._fields,
            body,
            self.parser.should_keep_alive(),
            self._forward,
            self._special.get(b"authorization"),
        )
        self.queue.append(request)
        self.queued_bytes += len(body)
        self.phase = _IDLE
        self.phase_since = self._now

    # ---- answering --------------------------------------------------------------------------------

    def _fail(self, error: HttpError) -> None:
        """A request that cannot be parsed ends the connection, after the requests queued before it."""
        self.queue.append(error)
        self.phase = _IDLE
        self._pause_reading()

    def _pause_reading(self) -> None:
        transport = self.transport
        if transport is not None and not self.reading_paused and not transport.is_closing():
            self.reading_paused = True
            transport.pause_reading()

    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def _next(self) -> None:
        while not self.busy and self.queue and not self.writing_paused and self.transport is not None:
            item = self.queue.popleft()
            if isinstance(item, HttpError):
                self._write(error_response(item.status, item.message), "GET", keep_alive=False)
                return
            self.queued_bytes -= len(item.body)
            self.busy = True
            self.tracker.in_flight += 1
            try:
                result = self.handler(item)
            except Exception as error:  # the server must answer whatever a route does
                result = _internal_error(error)
            if not self._answer(item, result):
                return
        if not self.queue:
            self.queued_bytes = 0
        transport = self.transport
        if (
            self.reading_paused
            and transport is not None
            and self.queued_bytes <= self.limits.max_body
            and not transport.is_closing()
            and not (self.queue and isinstance(self.queue[-1], HttpError))
        ):
            self.reading_paused = False
            transport.resume_reading()
        if not self.busy and not self.queue and self.closing and self.transport is not None:
            self.transport.close()

    # LaneClient: the end of an invocation the lane took.

    def lane_done(self, keep_alive: bool) -> None:
        """The lane wrote the response."""
        self.busy = False
        self.tracker.in_flight -= 1
        self.phase_since = time.monotonic()
        transport = self.transport
        if transport is None:
            return
        if not keep_alive:
            self.closing = True
            transport.close()
        elif self.queue or self.reading_paused or self.closing:
            self._next()

    def lane_demoted(self, method: str, keep_alive: bool, outcome: Completion[AnyResponse]) -> None:
        """The general path answers the lane's invocation instead, once ``outcome`` is in."""
        outcome.add_done_callback(
            functools.partial(self._resolved, Request(method, "", _NO_FIELDS, b"", keep_alive))
        )

    def _answer(
        self, item: Request, result: AnyResponse | Awaitable[AnyResponse] | Completion[AnyResponse]
    ) -> bool:
        """Answer ``item`` now (True) or once its result is in (False)."""
        if isinstance(result, _IMMEDIATE):
            self._finish(item, result)
            return True
        # No task: a future or completion resolves through a callback, which matters on the hot path.
        if isinstance(result, Completion):
            result.add_done_callback(functools.partial(self._resolved, item))
        else:
            asyncio.ensure_future(result).add_done_callback(functools.partial(self._resolved, item))
        return False

    def _resolved(
        self, request: Request, outcome: asyncio.Future[AnyResponse] | Completion[AnyResponse]
    ) -> None:
        response: AnyResponse
        if outcome.cancelled():
            response = error_response(503, "the request was cancelled (server shutting down)")
        elif outcome.exception() is not None:
            response = _internal_error(outcome.exception())
        else:
            response = outcome.result()
        self._finish(request, response)
        if not self.busy and (self.queue or self.reading_paused or self.closing):
            self._next()

    def _finish(self, request: Request, response: AnyResponse) -> None:
        self.tracker.in_flight -= 1
        keep_alive = request.keep_alive and not self.closing
        if isinstance(response, StreamedResponse):
            self._start_stream(request, response, keep_alive=keep_alive)
            return
        self.busy = False
        self._write(response, request.method, keep_alive=keep_alive)

    def _write(self, response: Response | RawResponse, method: str, *, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if isinstance(response, RawResponse):
            # Checked where it was read (InstanceChannel): status and header lines are safe to write.
            status, block, body = response.status, response.header_block, response.body
            if keep_alive and method != "HEAD" and status not in (204, 304) and len(body) < 65536:
                size = len(body)
                length = _LENGTH_LINES[size] if size < 4096 else b"Content-Length: %d\r\n\r\n" % size
                transport.write(b"".join((status_line(status), block, length, body)))
                return
        else:
            try:
                status = check_status(response.status)
                block = header_lines(response.headers, internal=self.limits.internal_hop)
                body = response.body
            except InvalidResponse as error:
                status, body = 502, _bad_gateway_body(error)
                block = b"Content-Type: application/json\r\n"
        skip_body, skip_length = _no_body(method, status, internal=self.limits.internal_hop)
        head = response_head(status, block, None if skip_length else len(body), keep_alive=keep_alive)
        if skip_body or not body:
            transport.write(head)
        elif len(body) < 65536:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        if not keep_alive:
            self.closing = True
            transport.close()

    def _start_stream(self, request: Request, response: StreamedResponse, *, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            response.source.abandon()
            self.busy = False
            return
        skip_body, skip_length = _no_body(request.method, response.status, internal=self.limits.internal_hop)
        if skip_body:
            # Nothing of the body may reach the client; the source still has to be drained.
            response.source.abandon()
            self.busy = False
            head = response_head(
                response.status,
                response.header_block,
                None if skip_length else response.length,
                keep_alive=False,
            )
            transport.write(head)
            self.closing = True
            transport.close()
            return
        transport.write(
            response_head(response.status, response.header_block, response.length, keep_alive=keep_alive)
        )
        self.stream = response
        self.stream_keep_alive = keep_alive
        response.source.attach(self)
        if self.writing_paused:
            response.source.pause()

    # BodySink: the streamed body of the response being written.

    def body_data(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def body_end(self) -> None:
        self.stream = None
        self.busy = False
        if self.transport is None:
            return
        if not self.stream_keep_alive:
            self.closing = True
            self.transport.close()
            return
        self._next()

    def body_abort(self) -> None:
        """The source failed mid-body: the client can only learn it from a closed connection."""
        self.stream = None
        self.busy = False
        if self.transport is not None:
            self.closing = True
            self.transport.abort()

    # ---- timeouts ---------------------------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        transport = self.transport
        if transport is None:
            return
        limits = self.limits
        buffered = transport.get_write_buffer_size()
        if buffered and limits.write_timeout_s is not None:
            if self.write_stalled_since is None or buffered < self.write_buffered:
                self.write_stalled_since = now
            elif now - self.write_stalled_since > limits.write_timeout_s:
                self._time_out(None)
                return
            self.write_buffered = buffered
            return
        self.write_stalled_since = None
        elapsed = now - self.phase_since
        if self.phase == _HEAD and limits.header_timeout_s is not None and elapsed > limits.header_timeout_s:
            self._time_out(f"the request head did not arrive within {limits.header_timeout_s:g} s")
        elif (
            (self.phase == _BODY or self.lane_held is not None)
            and limits.body_timeout_s is not None
            and elapsed > limits.body_timeout_s
        ):
            self._time_out(f"no request body data for {limits.body_timeout_s:g} s")
        elif (
            self.phase == _IDLE
            and self.lane_held is None
            and not self.busy
            and not self.queue
            and limits.idle_timeout_s is not None
            and elapsed > limits.idle_timeout_s
        ):
            self.tracker.timed_out += 1
            transport.close()

    def _time_out(self, message: str | None) -> None:
        transport = self.transport
        assert transport is not None
        self.tracker.timed_out += 1
        if message is not None and not self.busy and not self.queue:
            transport.write(encode_response(error_response(408, message), keep_alive=False))
            transport.close()
        else:
            transport.abort()
        self.closing = True
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.source.abandon()


def _bad_gateway_body(error: InvalidResponse) -> bytes:
    return json.dumps(
        {"error": f"the function returned an invalid response: {error}", "status": 502}
    ).encode()


def _internal_error(error: BaseException | None) -> Response:
    return error_response(500, f"internal error: {type(error).__name__}: {error}")


class ConnectionTracker:
    """Open connections and requests in flight: for graceful shutdown, timeouts and the connection cap."""

    def __init__(self) -> None:
        self.connections: set[ServerProtocol] = set()
        self.in_flight = 0
        self.refused = 0
        """Connections turned away at the cap."""
        self.timed_out = 0
        """Connections closed by a header, body, idle or write timeout."""
        self._sweeper: asyncio.TimerHandle | None = None

    def start_sweeping(self, interval_s: float = 1.0) -> None:
        """Check every connection's timeouts every ``interval_s`` (one timer, not one per connection)."""
        loop = asyncio.get_running_loop()

        def sweep() -> None:
            now = time.monotonic()
            for connection in list(self.connections):
                connection.check_timeouts(now)
            self._sweeper = loop.call_later(interval_s, sweep)

        self._sweeper = loop.call_later(interval_s, sweep)

    def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def buffered_bytes(self) -> int:
        """Response bytes written but not yet taken by the clients."""
        return sum(
            connection.transport.get_write_buffer_size()
            for connection in self.connections
            if connection.transport is not None
        )

    async def drain(self, timeout_s: float) -> bool:
        self.stop_sweeping()
        for connection in list(self.connections):
            connection.close_when_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self.in_flight == 0


# ---- client ---------------------------------------------------------------------------------------------


class ConnectionClosed(ConnectionError):
    """The peer closed the connection before answering."""


class UpstreamError(ConnectionError):
    """The upstream answered with something that is not a valid, bounded HTTP response."""


class ClientProtocol(asyncio.Protocol):
    """One client connection with at most one request in flight; responses parsed by llhttp, bounded."""

    def __init__(self, max_response: int = DEFAULT_MAX_RESPONSE) -> None:
        self.max_response = max_response
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionClosed("connection closed before the response"))

    def send(self, payload: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            self._fail(UpstreamError("the upstream sent data nobody asked for"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            self._fail(cause if isinstance(cause, UpstreamError) else UpstreamError(str(cause)))
        except httptools.HttpParserError as error:
            self._fail(UpstreamError(f"malformed response from the upstream: {error}"))

    def _fail(self, error: ConnectionError) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def on_message_begin(self) -> None:
        self._headers = []
        self._head_bytes = 0
        self._body = []
        self._body_size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES or len(self._headers) >= MAX_HEADERS:
            raise UpstreamError(f"response head larger than {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} fields")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        for name, value in self._headers:
            if name.lower() == "content-length" and int(value) > self.max_response:
                raise UpstreamError(
                    f"response of {value} bytes exceeds the limit of {self.max_response} bytes"
                )

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.max_response:
            raise UpstreamError(f"response exceeds the limit of {self.max_response} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        headers = [(name, value) for name, value in self._headers if name.lower() not in HOP_BY_HOP]
        response = Response(self._status, b"".join(self._body), headers)
        waiter, self.waiter = self.waiter, None
        if not keep_alive and self.transport is not None:
            self.closed = True
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(response)


Connector = Callable[[], Awaitable[tuple[asyncio.BaseTransport, ClientProtocol]]]


class ClientPool:
    """Keep-alive connections to one upstream, reused as a reverse proxy does."""

    def __init__(self, connect: Connector, *, host: str = "localhost") -> None:
        self.connect = connect
        self.host = host
        self.idle: deque[ClientProtocol] = deque()

    @classmethod
    def tcp(cls, host: str, port: int, *, max_response: int = DEFAULT_MAX_RESPONSE) -> ClientPool:
        async def connect() -> tuple[asyncio.BaseTransport, ClientProtocol]:
            return await asyncio.get_running_loop().create_connection(
                lambda: ClientProtocol(max_response), host, port
            )

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
