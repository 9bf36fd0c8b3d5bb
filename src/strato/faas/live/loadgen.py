"""An HTTP/1.1 load generator meant to run in its own process, next to the server it measures.

Two modes:

* **open loop** (:func:`run_open_loop`, :func:`run_schedule`): every request has an *intended* send time
  taken from a schedule (constant rate, seeded Poisson, or a replayed trace). Latency is measured from the
  intended time, not from the moment the request reached the wire, so a server that falls behind (or a
  connection cap that makes requests queue) shows up in the latencies instead of silently slowing the
  generator down ("coordinated omission").
* **closed loop** (:func:`run_closed_loop`): ``C`` connections each send the next request as soon as the
  previous answer arrives, which measures the maximum throughput.

The client is a small HTTP/1.1 implementation over :class:`asyncio.Protocol` with a keep-alive connection
pool; it is callback driven (no task or future per request, one timer wake-up per batch of due requests)
because it shares the CPUs with the server it measures. uvloop is used when it is installed, and on Linux a
timerfd gives the open-loop dispatcher sub-millisecond wake-ups (see :class:`_Sleeper`).

Timeouts apply to each attempt on the wire (``timeout_s`` after the request was written, or to open a
connection). A request still queued for a connection is not timed out until the run's drain deadline
(``timeout_s`` after the last intended send time); then whatever is left counts as timed out.

Outcome codes, used in :attr:`LoadResult.status_counts` and :class:`PerRequestResults`: an HTTP status for
a request that got a response; ``0`` in ``status_counts`` for a request that got none (connection refused
or reset, protocol error, or timeout; :attr:`LoadResult.timeouts` says how many of those were timeouts).
Per-request arrays keep the two apart: ``0`` is a connection error and ``-1`` a timeout.

Command line (prints :meth:`LoadResult.to_json` with ``--json``)::

    python -m strato.faas.live.loadgen --url http://127.0.0.1:8080/function/echo --mode open \\
        --rate 500 --duration 10 --warmup 1 --arrival poisson --seed 3 --body-bytes 64 --json

JSON format (``"format": "strato-loadgen/1"``): the scalar fields of :class:`LoadResult`, ``status_counts``
with string keys, a ``summary`` (:meth:`LoadResult.summary`, for people; ignored when reading back) and the
latencies as ``{"encoding": E, "count": N, "data": D}`` where ``E`` is ``"f64le-base64"`` (default: exact),
``"f32le-base64"`` (half the size, ~7 significant digits), ``"list"`` (a JSON list of floats) or
``"none"`` (left out). ``per_request`` is present only when per-request results were kept; its arrays use
the same encoding objects (``"i16le-base64"`` for the statuses).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from strato.errors import ConfigError, StratoError

JSON_FORMAT: Final = "strato-loadgen/1"
LATENCY_ENCODINGS: Final = ("f64", "f32", "list", "none")

STATUS_ERROR: Final = 0
STATUS_TIMEOUT: Final = -1

_now = time.perf_counter
_T = TypeVar("_T")

Headers = tuple[tuple[str, str], ...]
ScheduledRequest = tuple[float, "str | Target", bytes, Sequence[tuple[str, str]]]
"""``(offset_s, path or Target, body, extra headers)``: one request of a replayed schedule."""


# --------------------------------------------------------------------------------------------- target


def _check_token(value: str, what: str) -> None:
    if not value or any(c in value for c in "\r\n\0"):
        raise ConfigError(f"invalid {what}: {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{what} must be latin-1 (percent-encode paths): {value!r}") from exc


@dataclass(frozen=True)
class Target:
    """Where and what to send: one endpoint of an HTTP/1.1 server."""

    host: str
    port: int
    path: str
    body: bytes = b""
    headers: Headers = ()
    method: str = "POST"

    def __post_init__(self) -> None:
        # Accept lists of pairs too, but store tuples so that targets stay hashable.
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in self.headers))
        if not 0 < self.port < 65536:
            raise ConfigError(f"port out of range: {self.port}")
        _check_token(self.host, "host")
        _check_token(self.method, "method")
        if " " in self.method:
            raise ConfigError(f"invalid method: {self.method!r}")
        _check_path(self.path)
        for name, value in self.headers:
            _check_token(name, "header name")
            if ":" in name or " " in name:
                raise ConfigError(f"invalid header name: {name!r}")
            if any(c in value for c in "\r\n\0"):
                raise ConfigError(f"invalid value for header {name}: {value!r}")

    @classmethod
    def from_url(
        cls,
        url: str,
        body: bytes = b"",
        headers: Iterable[tuple[str, str]] = (),
        method: str = "POST",
    ) -> Target:
        """``http://127.0.0.1:8080/function/echo`` -> a target (only plain ``http`` is supported)."""
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ConfigError(f"only http:// URLs are supported, got {url!r}")
        if not parts.hostname:
            raise ConfigError(f"URL has no host: {url!r}")
        try:
            port = parts.port or 80
        except ValueError as exc:
            raise ConfigError(f"bad port in URL {url!r}") from exc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname, port, path, bytes(body), tuple(headers), method)

    @property
    def url(self) -> str:
        return f"http://{self._host_header()}{self.path}"

    def _host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 80 else f"{host}:{self.port}"

    def request_bytes(self) -> bytes:
        """The whole request as it goes on the wire."""
        return _RequestBuilder(self).build(self.path, self.body, ())


def _check_path(path: str) -> None:
    _check_token(path, "path")
    if not path.startswith("/") or " " in path:
        raise ConfigError(f"path must start with '/' and contain no spaces: {path!r}")


class _RequestBuilder:
    """Pre-encodes the parts of a request that do not change, so a replayed request costs one join."""

    __slots__ = ("_fixed_headers", "_method", "_send_empty_length")

    def __init__(self, target: Target) -> None:
        self._method = target.method.encode("latin-1") + b" "
        names = {name.lower() for name, _ in target.headers}
        lines = [] if "host" in names else [f"Host: {target._host_header()}\r\n"]
        lines += [f"{k}: {v}\r\n" for k, v in target.headers if k.lower() != "content-length"]
        self._fixed_headers = "".join(lines).encode("latin-1")
        # A POST with an empty body still announces it; GET-like requests usually must not.
        self._send_empty_length = target.method.upper() not in ("GET", "HEAD", "DELETE", "OPTIONS")

    def build(self, path: str, body: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
        extra = (
            "".join(f"{k}: {v}\r\n" for k, v in headers if k.lower() != "content-length").encode("latin-1")
            if headers
            else b""
        )
        send_length = body or self._send_empty_length
        length = b"Content-Length: %d\r\n\r\n" % len(body) if send_length else b"\r\n"
        return b"".join(
            (self._method, path.encode("latin-1"), b" HTTP/1.1\r\n", self._fixed_headers, extra, length, body)
        )


# --------------------------------------------------------------------------------------------- results


def _encode_array(values: npt.NDArray[Any], kind: str) -> dict[str, Any]:
    if kind == "list":
        return {"encoding": "list", "count": len(values), "data": values.tolist()}
    dtype = {"f64": "<f8", "f32": "<f4", "i16": "<i2"}[kind]
    raw = np.ascontiguousarray(values, dtype=dtype).tobytes()
    return {"encoding": f"{kind}le-base64", "count": len(values), "data": base64.b64encode(raw).decode()}


def _decode_array(obj: dict[str, Any], dtype: type[np.generic]) -> npt.NDArray[Any]:
    encoding = obj.get("encoding")
    if encoding == "list":
        return np.asarray(obj["data"], dtype=dtype)
    codes = {"f64le-base64": "<f8", "f32le-base64": "<f4", "i16le-base64": "<i2"}
    if encoding not in codes:
        raise StratoError(f"unknown array encoding in load-generator JSON: {encoding!r}")
    values = np.frombuffer(base64.b64decode(obj["data"]), dtype=codes[encoding]).astype(dtype)
    if "count" in obj and len(values) != obj["count"]:
        raise StratoError(f"array holds {len(values)} values, expected {obj['count']}")
    return values


def _opt_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(eq=False)
class PerRequestResults:
    """Outcome of every request of a schedule, indexed by its position in the input.

    ``status``: HTTP status, ``0`` connection error, ``-1`` timeout or never finished.
    ``latency_s``: from the intended send time to the outcome (NaN when there was none).
    ``service_s``: from the moment the request was written to its outcome, i.e. without the time it
    queued for a connection (NaN when it was never written).
    """

    status: npt.NDArray[np.int16]
    latency_s: npt.NDArray[np.float64]
    service_s: npt.NDArray[np.float64]

    def rows(self) -> Iterator[tuple[int, int, float]]:
        """``(index, status, latency_s)`` per request."""
        for i, (s, lat) in enumerate(zip(self.status.tolist(), self.latency_s.tolist(), strict=True)):
            yield i, s, lat


@dataclass(eq=False)
class LoadResult:
    """What one run measured. Only requests of the measured window (after warm-up) are counted.

    Open loop: the window holds the requests whose *intended* time falls after the warm-up; ``sent`` is
    their number, ``completed`` how many got an HTTP response (any status) and ``latencies_s`` their
    latencies from the intended time. ``responses_in_window`` counts responses that *arrived* inside the
    window, whatever request they answer, so ``achieved_rps`` shows a server that falls behind.
    Closed loop: everything is counted by the time it happened inside the window.
    """

    mode: str
    offered_rps: float | None
    duration_s: float
    sent: int
    completed: int
    status_counts: dict[int, int]
    latencies_s: npt.NDArray[np.float64]
    timeouts: int = 0
    responses_in_window: int | None = None
    connections_opened: int = 0
    dispatch_lag_mean_s: float = 0.0
    """Open loop: how late the dispatcher fired requests (timer granularity or a busy generator)."""
    dispatch_lag_max_s: float = 0.0
    generator_cpu_s: float = 0.0
    """CPU time the generator process used during the run, to tell whether it was a bottleneck."""
    window_cpu_s: float | None = None
    """CPU time (user + system) the generator used inside the measured window: its steady state, without
    the warm-up's connection set-up or the drain. ``None`` when the window was never reached."""
    window_wall_s: float | None = None
    """Wall-clock seconds between the two CPU readings of :attr:`window_cpu_s`."""
    process_cpu_s: float | None = None
    """CPU time of the whole generator process (interpreter start, run, output), read by the parent from
    the child's resource usage; set by :func:`run_in_subprocess` only."""
    per_request: PerRequestResults | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.latencies_s = np.asarray(self.latencies_s, dtype=np.float64)

    @property
    def achieved_rps(self) -> float:
        if self.duration_s <= 0:
            return 0.0
        count = self.completed if self.responses_in_window is None else self.responses_in_window
        return count / self.duration_s

    @property
    def cpu_per_request_s(self) -> float | None:
        """The generator's CPU seconds per response inside the measured window."""
        answered = self.completed if self.responses_in_window is None else self.responses_in_window
        if self.window_cpu_s is None or answered <= 0:
            return None
        return self.window_cpu_s / answered

    @property
    def core_share(self) -> float | None:
        """The generator's CPU use inside the measured window as a share of one core (1.0: a whole one)."""
        if self.window_cpu_s is None or not self.window_wall_s:
            return None
        return self.window_cpu_s / self.window_wall_s

    @property
    def errors(self) -> int:
        """Requests that got no HTTP response (connection errors and timeouts)."""
        return self.status_counts.get(STATUS_ERROR, 0)

    def percentile(self, q: float) -> float:
        """Latency percentile in seconds, ``q`` in percent (50, 99, 99.9); NaN without latencies."""
        if not 0 <= q <= 100:
            raise ConfigError(f"percentile must be within [0, 100], got {q}")
        if len(self.latencies_s) == 0:
            return math.nan
        return float(np.percentile(self.latencies_s, q))

    def summary(self) -> dict[str, float | int | None]:
        """Headline numbers; latencies in seconds, ``None`` where there was nothing to measure."""
        lat = self.latencies_s
        ok = sum(n for s, n in self.status_counts.items() if 200 <= s < 300)
        empty = len(lat) == 0
        return {
            "offered_rps": self.offered_rps,
            "achieved_rps": self.achieved_rps,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "completed": self.completed,
            "ok": ok,
            "non_2xx": self.completed - ok,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "p50": None if empty else _opt_float(self.percentile(50)),
            "p90": None if empty else _opt_float(self.percentile(90)),
            "p99": None if empty else _opt_float(self.percentile(99)),
            "p999": None if empty else _opt_float(self.percentile(99.9)),
            "max": None if empty else float(lat.max()),
            "mean": None if empty else float(lat.mean()),
            "connections_opened": self.connections_opened,
            "dispatch_lag_mean_s": self.dispatch_lag_mean_s,
            "dispatch_lag_max_s": self.dispatch_lag_max_s,
            "generator_cpu_s": self.generator_cpu_s,
            "window_cpu_s": self.window_cpu_s,
            "cpu_per_request_s": self.cpu_per_request_s,
            "core_share": self.core_share,
        }

    def to_json(self, latency_encoding: str = "f64") -> dict[str, Any]:
        """A JSON-ready dict; ``latency_encoding`` is one of ``f64``, ``f32``, ``list``, ``none``."""
        if latency_encoding not in LATENCY_ENCODINGS:
            raise ConfigError(
                f"latency encoding must be one of {LATENCY_ENCODINGS}, got {latency_encoding!r}"
            )
        out: dict[str, Any] = {
            "format": JSON_FORMAT,
            "mode": self.mode,
            "offered_rps": self.offered_rps,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "completed": self.completed,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "timeouts": self.timeouts,
            "responses_in_window": self.responses_in_window,
            "connections_opened": self.connections_opened,
            "dispatch_lag_mean_s": self.dispatch_lag_mean_s,
            "dispatch_lag_max_s": self.dispatch_lag_max_s,
            "generator_cpu_s": self.generator_cpu_s,
            "window_cpu_s": self.window_cpu_s,
            "window_wall_s": self.window_wall_s,
            "process_cpu_s": self.process_cpu_s,
            "summary": self.summary(),
        }
        if latency_encoding == "none":
            out["latencies"] = {"encoding": "none", "count": len(self.latencies_s)}
        else:
            out["latencies"] = _encode_array(self.latencies_s, latency_encoding)
        if self.per_request is not None:
            float_kind = "f64" if latency_encoding in ("f64", "none") else latency_encoding
            out["per_request"] = {
                "status": _encode_array(self.per_request.status, "list" if float_kind == "list" else "i16"),
                "latency_s": _encode_array(self.per_request.latency_s, float_kind),
                "service_s": _encode_array(self.per_request.service_s, float_kind),
            }
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        if data.get("format") != JSON_FORMAT:
            raise StratoError(f"not a load-generator result (format {data.get('format')!r})")
        try:
            lat_obj = data["latencies"]
            latencies = (
                np.empty(0) if lat_obj.get("encoding") == "none" else _decode_array(lat_obj, np.float64)
            )
            per_request = None
            if data.get("per_request") is not None:
                pr = data["per_request"]
                per_request = PerRequestResults(
                    status=_decode_array(pr["status"], np.int16),
                    latency_s=_decode_array(pr["latency_s"], np.float64),
                    service_s=_decode_array(pr["service_s"], np.float64),
                )
            return cls(
                mode=str(data["mode"]),
                offered_rps=None if data["offered_rps"] is None else float(data["offered_rps"]),
                duration_s=float(data["duration_s"]),
                sent=int(data["sent"]),
                completed=int(data["completed"]),
                status_counts={int(k): int(v) for k, v in data["status_counts"].items()},
                latencies_s=latencies,
                timeouts=int(data.get("timeouts", 0)),
                responses_in_window=(
                    None if data.get("responses_in_window") is None else int(data["responses_in_window"])
                ),
                connections_opened=int(data.get("connections_opened", 0)),
                dispatch_lag_mean_s=float(data.get("dispatch_lag_mean_s", 0.0)),
                dispatch_lag_max_s=float(data.get("dispatch_lag_max_s", 0.0)),
                generator_cpu_s=float(data.get("generator_cpu_s", 0.0)),
                window_cpu_s=_float_or_none(data.get("window_cpu_s")),
                window_wall_s=_float_or_none(data.get("window_wall_s")),
                process_cpu_s=_float_or_none(data.get("process_cpu_s")),
                per_request=per_request,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StratoError(f"malformed load-generator result: {exc!r}") from exc


# --------------------------------------------------------------------------------------------- client

# Response parser states.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _TRAILER, _UNTIL_EOF = range(6)
_MAX_HEAD = 64 * 1024


class _Req:
    __slots__ = ("idx", "intended", "payload", "sent", "tries")

    def __init__(self, idx: int, intended: float, payload: bytes) -> None:
        self.idx = idx
        self.intended = intended
        self.payload = payload
        self.sent = math.nan
        self.tries = 0


Done = Callable[[_Req, int, float], None]


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining)."""

    __slots__ = (
        "buf",
        "got_bytes",
        "head_only",
        "keep",
        "pool",
        "remaining",
        "req",
        "sent_at",
        "served",
        "state",
        "status",
        "timed_out",
        "transport",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.req: _Req | None = None
        self.buf = bytearray()
        self.state = _HEAD
        self.status = 0
        self.remaining = 0
        self.keep = True
        self.served = 0
        self.got_bytes = False
        self.sent_at = 0.0
        self.timed_out = False
        self.head_only = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence a cast rather than a check.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, req: _Req, now: float) -> None:
        self.req = req
        self.sent_at = now
        req.sent = now
        self.got_bytes = False
        # The answer to a HEAD announces a body length but carries no body.
        self.head_only = req.payload.startswith(b"HEAD ")
        assert self.transport is not None
        self.transport.write(req.payload)

    def data_received(self, data: bytes) -> None:
        if self.req is None:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            self.keep = False
            if self.transport is not None:
                self.transport.abort()
            return
        self.got_bytes = True
        self.buf += data
        try:
            self._parse()
        except (ValueError, IndexError):
            self._protocol_error()

    def _protocol_error(self) -> None:
        self.buf.clear()
        self.served = 0  # never retry a request whose answer was garbage
        self.got_bytes = True
        if self.transport is not None:
            self.transport.abort()

    def _parse(self) -> None:
        buf = self.buf
        while self.req is not None:
            state = self.state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise ValueError("response head too large")
                    return
                head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                if not head.startswith(b"http/1."):
                    raise ValueError("not an HTTP/1.x response")
                status = int(head[9:12])
                if status < 200:
                    continue  # interim response (100 Continue): the real one follows
                self.status = status
                keep = head[7:8] == b"1"  # HTTP/1.1 defaults to keep-alive, 1.0 to close
                at = head.find(b"\nconnection:")
                if at >= 0:
                    value = head[at + 12 : _line_end(head, at + 1)]
                    if b"close" in value:
                        keep = False
                    elif b"keep-alive" in value:
                        keep = True
                self.keep = keep
                if self.head_only or status in (204, 304):
                    self._finish()
                    continue
                at = head.find(b"\ntransfer-encoding:")
                if at >= 0 and b"chunked" in head[at : _line_end(head, at + 1)]:
                    self.state = _CHUNK_SIZE
                    continue
                at = head.find(b"\ncontent-length:")
                if at >= 0:
                    self.remaining = int(head[at + 16 : _line_end(head, at + 1)])
                    if self.remaining == 0:
                        self._finish()
                    else:
                        self.state = _BODY
                else:
                    self.keep = False
                    self.state = _UNTIL_EOF
            elif state in (_BODY, _CHUNK_DATA):
                have = len(buf)
                if have < self.remaining:
                    self.remaining -= have
                    buf.clear()
                    return
                del buf[: self.remaining]
                if state == _BODY:
                    self._finish()
                else:
                    self.state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise ValueError("chunk size line too long")
                    return
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                if size == 0:
                    self.state = _TRAILER
                else:
                    self.remaining = size + 2  # the chunk and its CRLF
                    self.state = _CHUNK_DATA
            elif state == _TRAILER:
                if buf[:2] == b"\r\n":
                    del buf[:2]
                    self._finish()
                    continue
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > _MAX_HEAD:
                        raise ValueError("trailers too large")
                    return
                del buf[: end + 4]
                self._finish()
            else:  # _UNTIL_EOF: the body ends when the server closes
                buf.clear()
                return

    def _finish(self) -> None:
        req = self.req
        assert req is not None
        self.req = None
        self.state = _HEAD
        self.served += 1
        keep = self.keep
        if self.buf:
            keep = False  # extra bytes after a full response: framing is off
            self.buf.clear()
        self.pool.on_response(self, req, self.status, _now(), keep)

    def connection_lost(self, exc: Exception | None) -> None:
        req = self.req
        self.req = None
        if req is not None and self.state == _UNTIL_EOF:
            self.state = _HEAD
            self.pool.on_response(self, req, self.status, _now(), False)
            req = None
        retry = req is not None and self.served > 0 and not self.got_bytes and not self.timed_out
        self.pool.on_lost(self, req, retry, self.timed_out)


def _line_end(head: bytes, start: int) -> int:
    end = head.find(b"\n", start)
    return len(head) if end < 0 else end


class _Pool:
    """Keep-alive connections to one host:port, opened on demand up to a cap.

    A request takes the most recently freed connection (so few stay hot) or queues; queued requests keep
    their intended time, which is what makes the queueing visible in the latencies.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        max_connections: int,
        timeout_s: float,
        on_done: Done,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.on_done = on_done
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.waiting: deque[_Req] = deque()
        self.connecting = 0
        self.opened = 0
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper = loop.create_task(self._sweep())

    def submit(self, req: _Req, now: float) -> None:
        if self.idle:
            self.idle.pop().send(req, now)
            return
        self.waiting.append(req)
        if len(self.conns) + self.connecting < self.max_connections:
            self._open()

    def _open(self) -> None:
        self.connecting += 1
        task = self.loop.create_task(self._connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                _, conn = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except Exception as exc:  # refused, unreachable, unresolvable, timed out: all count as errors
            self.connecting -= 1
            if self.closed:
                return
            # The request that asked for this connection fails; later ones get their own attempt.
            if self.waiting:
                timed_out = isinstance(exc, TimeoutError)
                self.on_done(self.waiting.popleft(), STATUS_TIMEOUT if timed_out else STATUS_ERROR, _now())
            if self.waiting and len(self.conns) + self.connecting < self.max_connections:
                self._open()
            return
        self.connecting -= 1
        self.opened += 1
        if self.closed:
            assert conn.transport is not None
            conn.transport.close()
            return
        self.conns.add(conn)
        if self.waiting:
            conn.send(self.waiting.popleft(), _now())
        else:
            self.idle.append(conn)

    def on_response(self, conn: _Conn, req: _Req, status: int, now: float, keep: bool) -> None:
        if self.closed:
            return
        # Hand the connection on before reporting, so a closed-loop resubmission finds it idle.
        if keep and conn in self.conns:
            if self.waiting:
                conn.send(self.waiting.popleft(), now)
            else:
                self.idle.append(conn)
        else:
            self.conns.discard(conn)
            if conn.transport is not None:
                conn.transport.close()
            if self.waiting and len(self.conns) + self.connecting < self.max_connections:
                self._open()
        self.on_done(req, status, now)

    def on_lost(self, conn: _Conn, req: _Req | None, retry: bool, timed_out: bool) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if self.closed:
            return
        if req is not None:
            if retry and req.tries == 0:
                # A reused connection the server closed just as we wrote: send again on a fresh one.
                req.tries = 1
                self.waiting.appendleft(req)
            else:
                self.on_done(req, STATUS_TIMEOUT if timed_out else STATUS_ERROR, _now())
        if self.waiting and len(self.conns) + self.connecting < self.max_connections:
            self._open()

    async def _sweep(self) -> None:
        # One periodic sweep instead of a timer per request.
        period = min(0.1, max(self.timeout_s / 4, 0.005))
        while not self.closed:
            await asyncio.sleep(period)
            limit = _now() - self.timeout_s
            for conn in list(self.conns):
                if conn.req is not None and conn.sent_at < limit and conn.transport is not None:
                    conn.timed_out = True
                    conn.transport.abort()

    async def close(self) -> None:
        self.closed = True
        self._sweeper.cancel()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.close()
        self.conns.clear()
        self.idle.clear()
        self.waiting.clear()
        tasks = [*self._tasks, self._sweeper]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let connection_lost callbacks run while the loop is alive


# --------------------------------------------------------------------------------------------- running


def _run(coro: Coroutine[Any, Any, _T]) -> tuple[_T, float]:
    """Run ``coro`` on a fresh loop; also return the CPU seconds the process spent on it."""
    try:
        import uvloop
    except ImportError:  # uvloop only makes it faster
        factory = None
    else:
        factory = uvloop.new_event_loop
    # Objects alive before the run (a replayed schedule can hold 300k tuples) never become garbage during
    # it; freezing them keeps full collections from pausing the loop and skewing latencies.
    gc.collect()
    gc.freeze()
    cpu0 = time.process_time()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(coro)
    finally:
        gc.unfreeze()
    return result, time.process_time() - cpu0


class _WindowCpu:
    """The process's CPU time across the measured window, read by two loop callbacks at its ends.

    Set-up (connections opened during the warm-up) and the drain are left out, so CPU per request and the
    share of a core describe the generator's steady state, which is what says whether it kept up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, start_at: float, end_at: float) -> None:
        self.start: tuple[float, float] | None = None
        self.end: tuple[float, float] | None = None
        now = _now()
        self.handles = [
            loop.call_later(max(start_at - now, 0.0), self._mark_start),
            loop.call_later(max(end_at - now, 0.0), self._mark_end),
        ]

    def _mark_start(self) -> None:
        self.start = (time.process_time(), _now())

    def _mark_end(self) -> None:
        if self.start is not None and self.end is None:
            self.end = (time.process_time(), _now())

    def finish(self) -> tuple[float | None, float | None]:
        """``(cpu_s, wall_s)`` of the window; a run that ended before the window did ends it now."""
        for handle in self.handles:
            handle.cancel()
        self._mark_end()
        if self.start is None or self.end is None:
            return None, None
        return self.end[0] - self.start[0], self.end[1] - self.start[1]


def make_schedule(
    rate_rps: float, duration_s: float, arrival: str = "constant", seed: int = 0
) -> npt.NDArray[np.float64]:
    """Intended send offsets (seconds from the start, ascending) within ``[0, duration_s)``."""
    if not rate_rps > 0 or not math.isfinite(rate_rps):
        raise ConfigError(f"rate must be a positive number, got {rate_rps}")
    if not duration_s >= 0:
        raise ConfigError(f"duration must be >= 0, got {duration_s}")
    if arrival == "constant":
        n = math.ceil(rate_rps * duration_s - 1e-9)
        offsets = np.arange(max(n, 0), dtype=np.float64) / rate_rps
    elif arrival == "poisson":
        rng = np.random.default_rng(seed)
        expected = rate_rps * duration_s
        chunks: list[npt.NDArray[np.float64]] = []
        last = 0.0
        while last < duration_s:
            gaps = rng.exponential(1.0 / rate_rps, size=int(expected + 6 * math.sqrt(expected) + 16))
            chunk = last + np.cumsum(gaps)
            chunks.append(chunk)
            last = float(chunk[-1])
        offsets = np.concatenate(chunks) if chunks else np.empty(0)
    else:
        raise ConfigError(f"arrival must be 'constant' or 'poisson', got {arrival!r}")
    return offsets[offsets < duration_s]


def _check_common(duration_s: float, warmup_s: float, timeout_s: float) -> None:
    if not duration_s > 0:
        raise ConfigError(f"duration must be > 0, got {duration_s}")
    if not warmup_s >= 0:
        raise ConfigError(f"warm-up must be >= 0, got {warmup_s}")
    if not timeout_s > 0:
        raise ConfigError(f"timeout must be > 0, got {timeout_s}")


class _Sleeper:
    """Sleeps with sub-millisecond precision and without spinning.

    The loops' own timers have millisecond granularity (uvloop even rounds sub-millisecond delays down to
    zero, which turns a dispatcher into a busy loop); since latency counts from the intended send time,
    every bit of timer lateness would be blamed on the server. A Linux timerfd watched by the loop wakes
    it within microseconds. Elsewhere it falls back to the loop's timers.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fd = -1
        self.waiter: asyncio.Future[None] | None = None
        try:
            self._open()
        except (OSError, AttributeError, NotImplementedError, ValueError):
            self.close()

    def _open(self) -> None:
        import ctypes

        class Timespec(ctypes.Structure):
            _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))

        class Itimerspec(ctypes.Structure):
            _fields_ = (("it_interval", Timespec), ("it_value", Timespec))

        if not sys.platform.startswith("linux"):
            raise NotImplementedError
        libc = ctypes.CDLL(None, use_errno=True)
        clock_monotonic, tfd_nonblock, tfd_cloexec = 1, 0o4000, 0o2000000
        fd = libc.timerfd_create(clock_monotonic, tfd_nonblock | tfd_cloexec)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._settime = libc.timerfd_settime
        self._spec = Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self.loop.add_reader(fd, self._fired)

    async def sleep(self, delay: float) -> None:
        if self.fd < 0:
            # uvloop rounds sub-millisecond delays to zero: wait a whole one rather than spin.
            await asyncio.sleep(max(delay, 0.001))
            return
        # perf_counter and timerfd's CLOCK_MONOTONIC tick together, so a relative delay is exact enough.
        ns = max(int(delay * 1e9), 1000)
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(ns, 1_000_000_000)
        if self._settime(self.fd, 0, self._spec_ref, None) != 0:
            await asyncio.sleep(delay)
            return
        self.waiter = self.loop.create_future()
        await self.waiter

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


async def _replay(
    offsets: npt.NDArray[np.float64],
    order: npt.NDArray[np.intp] | None,
    build: Callable[[int], tuple[_Pool, bytes]],
    make_pools: Callable[[asyncio.AbstractEventLoop, Done], None],
    pools: list[_Pool],
    window: tuple[float, float],
    timeout_s: float,
    origin: float | None = None,
) -> tuple[dict[str, Any], float]:
    """Fire every request at its intended time; return the raw per-request arrays and the start time."""
    loop = asyncio.get_running_loop()
    n = len(offsets)
    status = array("h", [STATUS_TIMEOUT]) * n
    finished_at = array("d", [math.nan]) * n
    sent_at = array("d", [math.nan]) * n
    intended_abs = array("d", [math.nan]) * n
    pending = n
    all_done = asyncio.Event()
    if n == 0:
        all_done.set()

    def on_done(req: _Req, code: int, now: float) -> None:
        nonlocal pending
        i = req.idx
        if finished_at[i] == finished_at[i]:  # already recorded (not NaN): ignore a late duplicate
            return
        status[i] = code
        finished_at[i] = now
        sent_at[i] = req.sent
        pending -= 1
        if pending == 0:
            all_done.set()

    make_pools(loop, on_done)
    sleeper = _Sleeper(loop)
    win_lo, win_hi = window
    lag_sum = 0.0
    lag_max = 0.0
    lag_n = 0
    offs: list[float] = offsets.tolist()
    idx: list[int] = order.tolist() if order is not None else list(range(n))
    # A short lead so the first requests are not late because of set-up.
    t0 = _now() + 0.005 if origin is None else origin
    window_cpu = _WindowCpu(loop, t0 + win_lo, t0 + win_hi)
    pos = 0
    while pos < n:
        now = _now()
        due = now - t0
        if offs[pos] > due:
            await sleeper.sleep(offs[pos] - due)
            continue
        # Fire everything that is due in one go: one wake-up per batch, not a timer per request.
        while pos < n and offs[pos] <= due:
            off = offs[pos]
            i = idx[pos]
            pool, payload = build(i)
            intended = t0 + off
            intended_abs[i] = intended
            req = _Req(i, intended, payload)
            if win_lo <= off < win_hi:
                lag = now - intended
                lag_sum += lag
                lag_n += 1
                if lag > lag_max:
                    lag_max = lag
            pool.submit(req, now)
            pos += 1
    if pending:
        last = t0 + (offs[-1] if offs else 0.0)
        remaining = max(last + timeout_s + 1.0 - _now(), 0.0)
        with contextlib.suppress(TimeoutError):  # what is left is counted as timed out
            await asyncio.wait_for(all_done.wait(), remaining)
    cpu_s, wall_s = window_cpu.finish()
    sleeper.close()
    for pool in pools:
        await pool.close()
    raw = {
        "status": np.frombuffer(status, dtype=np.int16).copy(),
        "finished_at": np.frombuffer(finished_at, dtype=np.float64).copy(),
        "sent_at": np.frombuffer(sent_at, dtype=np.float64).copy(),
        "intended": np.frombuffer(intended_abs, dtype=np.float64).copy(),
        "lag_mean": lag_sum / lag_n if lag_n else 0.0,
        "lag_max": lag_max,
        "opened": sum(p.opened for p in pools),
        "window_cpu_s": cpu_s,
        "window_wall_s": wall_s,
    }
    return raw, t0


def _open_result(
    mode: str,
    offsets: npt.NDArray[np.float64],
    raw: dict[str, Any],
    t0: float,
    window: tuple[float, float],
    duration_s: float,
    offered_rps: float | None,
    keep_per_request: bool,
) -> LoadResult:
    status: npt.NDArray[np.int16] = raw["status"]
    finished: npt.NDArray[np.float64] = raw["finished_at"]
    intended: npt.NDArray[np.float64] = raw["intended"]
    latency = finished - intended
    lo, hi = window
    in_window = (offsets >= lo) & (offsets < hi)
    got = status > 0
    codes, counts = np.unique(
        np.where(status[in_window] < 0, STATUS_ERROR, status[in_window]), return_counts=True
    )
    rel_done = finished - t0
    arrived = got & (rel_done >= lo) & (rel_done < hi)
    per_request = None
    if keep_per_request:
        per_request = PerRequestResults(status=status, latency_s=latency, service_s=finished - raw["sent_at"])
    return LoadResult(
        mode=mode,
        offered_rps=offered_rps,
        duration_s=duration_s,
        sent=int(in_window.sum()),
        completed=int((in_window & got).sum()),
        status_counts={int(c): int(k) for c, k in zip(codes.tolist(), counts.tolist(), strict=True)},
        latencies_s=latency[in_window & got],
        timeouts=int((in_window & (status == STATUS_TIMEOUT)).sum()),
        responses_in_window=int(arrived.sum()),
        connections_opened=int(raw["opened"]),
        dispatch_lag_mean_s=float(raw["lag_mean"]),
        dispatch_lag_max_s=float(raw["lag_max"]),
        window_cpu_s=raw["window_cpu_s"],
        window_wall_s=raw["window_wall_s"],
        per_request=per_request,
    )


def run_open_loop(
    target: Target,
    rate_rps: float,
    duration_s: float,
    *,
    warmup_s: float = 1.0,
    arrival: str = "constant",
    seed: int = 0,
    max_connections: int = 256,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Send at ``rate_rps`` for ``warmup_s + duration_s``; latency counts from each intended send time."""
    _check_common(duration_s, warmup_s, timeout_s)
    if max_connections < 1:
        raise ConfigError(f"max_connections must be >= 1, got {max_connections}")
    offsets = make_schedule(rate_rps, warmup_s + duration_s, arrival, seed)
    payload = target.request_bytes()
    window = (warmup_s, warmup_s + duration_s)
    pools: list[_Pool] = []

    def make_pools(loop: asyncio.AbstractEventLoop, on_done: Done) -> None:
        pools.append(_Pool(loop, target.host, target.port, max_connections, timeout_s, on_done))

    def build(_: int) -> tuple[_Pool, bytes]:
        return pools[0], payload

    (raw, t0), cpu = _run(_replay(offsets, None, build, make_pools, pools, window, timeout_s))
    result = _open_result("open", offsets, raw, t0, window, duration_s, float(rate_rps), False)
    result.generator_cpu_s = cpu
    return result


def run_schedule(
    target: Target,
    requests: Iterable[ScheduledRequest],
    *,
    warmup_s: float = 0.0,
    duration_s: float | None = None,
    max_connections: int = 256,
    timeout_s: float = 10.0,
    keep_per_request: bool = False,
    origin: float | None = None,
) -> LoadResult:
    """Replay a trace: each request has its own intended offset (seconds from start), path, body, headers.

    ``origin`` is the ``time.perf_counter()`` value offset 0 stands for (by default just after set-up), so
    a caller can line other measurements, and the requests' contents, up with the schedule; requests whose
    time has passed when the generator is ready go at once, late, as with any other dispatch lag.

    An entry's second item is either a path on ``target`` (method, base headers and host from ``target``;
    its headers are added) or a whole :class:`Target` (which may name another host:port). The measured
    window is ``[warmup_s, warmup_s + duration_s)`` of intended offsets; without ``duration_s`` it ends
    just after the last offset. With ``keep_per_request`` the result's ``per_request`` holds the outcome of
    every request in input order.
    """
    if not warmup_s >= 0:
        raise ConfigError(f"warm-up must be >= 0, got {warmup_s}")
    if not timeout_s > 0:
        raise ConfigError(f"timeout must be > 0, got {timeout_s}")
    if max_connections < 1:
        raise ConfigError(f"max_connections must be >= 1, got {max_connections}")
    entries = requests if isinstance(requests, list) else list(requests)
    n = len(entries)
    offsets = np.fromiter((float(e[0]) for e in entries), dtype=np.float64, count=n)
    if n and (not np.isfinite(offsets).all() or offsets.min() < 0):
        raise ConfigError("schedule offsets must be finite and >= 0")
    order: npt.NDArray[np.intp] | None = None
    if n > 1 and bool((np.diff(offsets) < 0).any()):
        order = np.argsort(offsets, kind="stable")
    sorted_offsets = offsets if order is None else offsets[order]
    last = float(sorted_offsets[-1]) if n else warmup_s
    if duration_s is None:
        span = max(last - warmup_s, 0.0)
        # The window is half-open, so stretch it by a hair to include the last request.
        duration_s = span + max(span * 1e-9, 1e-6)
    elif not duration_s > 0:
        raise ConfigError(f"duration must be > 0, got {duration_s}")
    window = (warmup_s, warmup_s + duration_s)

    base_builder = _RequestBuilder(target)
    base_key = (target.host, target.port)
    builders: dict[Target, _RequestBuilder] = {}
    pools_by_addr: dict[tuple[str, int], _Pool] = {}
    pools: list[_Pool] = []
    state: dict[str, Any] = {}

    # Validate each distinct destination once: traces repeat a few paths many times.
    for dest in {e[1] for e in entries}:
        if isinstance(dest, Target):
            builders[dest] = _RequestBuilder(dest)
        else:
            _check_path(dest)

    def make_pools(loop: asyncio.AbstractEventLoop, on_done: Done) -> None:
        state["loop"] = loop
        state["on_done"] = on_done

    def pool_for(host: str, port: int) -> _Pool:
        pool = pools_by_addr.get((host, port))
        if pool is None:
            pool = _Pool(state["loop"], host, port, max_connections, timeout_s, state["on_done"])
            pools_by_addr[(host, port)] = pool
            pools.append(pool)
        return pool

    def build(i: int) -> tuple[_Pool, bytes]:
        _, dest, body, headers = entries[i]
        if isinstance(dest, Target):
            payload = builders[dest].build(dest.path, body, headers)
            return pool_for(dest.host, dest.port), payload
        return pool_for(*base_key), base_builder.build(dest, body, headers)

    (raw, t0), cpu = _run(_replay(sorted_offsets, order, build, make_pools, pools, window, timeout_s, origin))
    in_window = int(((offsets >= window[0]) & (offsets < window[1])).sum())
    offered = in_window / duration_s if duration_s > 0 else None
    result = _open_result("schedule", offsets, raw, t0, window, duration_s, offered, keep_per_request)
    result.generator_cpu_s = cpu
    return result


async def _closed(
    target: Target, connections: int, duration_s: float, warmup_s: float, timeout_s: float
) -> LoadResult:
    loop = asyncio.get_running_loop()
    payload = target.request_bytes()
    latencies = array("d")
    statuses: dict[int, int] = {}
    counters = {"sent": 0, "completed": 0, "timeouts": 0, "in_flight": 0}
    stopping = False
    drained = asyncio.Event()
    t0 = _now()
    win_lo = t0 + warmup_s
    win_hi = win_lo + duration_s
    window_cpu = _WindowCpu(loop, win_lo, win_hi)

    def submit() -> None:
        if stopping:
            return
        now = _now()
        if win_lo <= now < win_hi:
            counters["sent"] += 1
        counters["in_flight"] += 1
        pool.submit(_Req(0, now, payload), now)

    def on_done(req: _Req, code: int, now: float) -> None:
        counters["in_flight"] -= 1
        if win_lo <= now < win_hi:
            if code > 0:
                latencies.append(now - req.intended)
                counters["completed"] += 1
            else:
                if code == STATUS_TIMEOUT:
                    counters["timeouts"] += 1
                code = STATUS_ERROR
            statuses[code] = statuses.get(code, 0) + 1
        if stopping:
            if counters["in_flight"] == 0:
                drained.set()
        elif code > 0:
            submit()
        else:
            # Back off a little so a dead server does not turn the generator into a busy loop.
            loop.call_later(0.01, submit)

    pool = _Pool(
        loop,
        target.host,
        target.port,
        connections,
        timeout_s,
        on_done,
    )
    for _ in range(connections):
        submit()
    await asyncio.sleep(max(win_hi - _now(), 0.0))
    cpu_s, wall_s = window_cpu.finish()
    stopping = True
    if counters["in_flight"] > 0:
        # Let in-flight requests finish so the server is left clean for whatever it measures next.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), timeout_s)
    await pool.close()
    return LoadResult(
        mode="closed",
        offered_rps=None,
        duration_s=duration_s,
        sent=counters["sent"],
        completed=counters["completed"],
        status_counts=dict(sorted(statuses.items())),
        latencies_s=np.frombuffer(latencies, dtype=np.float64).copy(),
        timeouts=counters["timeouts"],
        responses_in_window=counters["completed"],
        connections_opened=pool.opened,
        window_cpu_s=cpu_s,
        window_wall_s=wall_s,
    )


def run_closed_loop(
    target: Target,
    connections: int,
    duration_s: float,
    *,
    warmup_s: float = 1.0,
    timeout_s: float = 10.0,
) -> LoadResult:
    """``connections`` connections, each sending its next request as soon as the previous one is answered."""
    _check_common(duration_s, warmup_s, timeout_s)
    if connections < 1:
        raise ConfigError(f"connections must be >= 1, got {connections}")
    result, cpu = _run(_closed(target, connections, duration_s, warmup_s, timeout_s))
    result.generator_cpu_s = cpu
    return result


# --------------------------------------------------------------------------------------------- subprocess

_SUBPROCESS_OPTIONS: Final = {
    "rate_rps": "--rate",
    "connections": "--connections",
    "duration_s": "--duration",
    "warmup_s": "--warmup",
    "arrival": "--arrival",
    "seed": "--seed",
    "max_connections": "--max-connections",
    "timeout_s": "--timeout",
}


def run_in_subprocess(
    target: Target,
    mode: str,
    *,
    python: str | None = None,
    extra_timeout_s: float = 60.0,
    **kwargs: float | str,
) -> LoadResult:
    """Run :func:`run_open_loop` (``mode="open"``) or :func:`run_closed_loop` (``"closed"``) in a child.

    ``kwargs`` are those functions' keyword arguments (``rate_rps``, ``connections``, ``duration_s``, ...).
    The body travels on the child's stdin, so it may be any bytes. Raises :class:`StratoError` with the
    child's stderr when it fails.
    """
    if mode not in ("open", "closed"):
        raise ConfigError(f"mode must be 'open' or 'closed', got {mode!r}")
    args = [
        python or sys.executable,
        "-m",
        "strato.faas.live.loadgen",
        "--url",
        target.url,
        "--mode",
        mode,
        "--method",
        target.method,
        "--body-file",
        "-",
        "--json",
    ]
    for key, value in kwargs.items():
        if key not in _SUBPROCESS_OPTIONS:
            raise ConfigError(f"unknown load-generator option {key!r}; known: {sorted(_SUBPROCESS_OPTIONS)}")
        args += [_SUBPROCESS_OPTIONS[key], str(value)]
    for name, value in target.headers:
        args += ["--header", f"{name}:{value}"]
    duration = float(kwargs.get("duration_s", 10.0)) + float(kwargs.get("warmup_s", 1.0))
    limit = duration + 2 * float(kwargs.get("timeout_s", 10.0)) + extra_timeout_s
    env = dict(os.environ)
    # The child must import this very package even when it is not installed (a source checkout).
    src_root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH")) if p)
    before = _children_cpu_s()
    try:
        proc = subprocess.run(
            args, input=target.body, capture_output=True, timeout=limit, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        stderr = (exc.stderr or b"").decode(errors="replace")
        raise StratoError(f"load generator did not finish within {limit:.0f} s\n{stderr}") from exc
    stderr = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise StratoError(f"load generator failed (exit status {proc.returncode}):\n{stderr}")
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise StratoError(f"load generator printed no valid JSON: {exc}\n{stderr}") from exc
    result = LoadResult.from_json(data)
    result.process_cpu_s = _children_cpu_s() - before
    return result


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's children that have been waited for.

    The difference across one ``subprocess.run`` is that child's CPU, provided nothing else in this
    process waits for a child meanwhile (the bench and the replay start one generator at a time).
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------- wrk

WRK_INSTALL_HINT: Final = (
    "install it with `scripts/bench-deps.sh` (as root), or `apt-get install wrk` (Debian/Ubuntu package wrk)"
)

_TIME_UNITS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_WRK_PERCENTILES: Final = (50, 75, 90, 99)


def find_wrk() -> str | None:
    """The path of ``wrk`` on ``PATH``, or ``None``."""
    return shutil.which("wrk")


@dataclass(frozen=True)
class WrkResult:
    """One closed-loop run of wrk (a C load generator), as wrk itself measured it (times in seconds)."""

    connections: int
    threads: int
    duration_s: float
    """wrk's own measured run time (it runs a little over the ``-d`` it was given)."""
    requests: int
    """Responses of any status."""
    rps: float
    """wrk's Requests/sec: ``requests / duration_s``."""
    p50_s: float
    p75_s: float
    p90_s: float
    p99_s: float
    error_statuses: int
    """Responses with a status of 400 or more (wrk's "Non-2xx or 3xx responses")."""
    socket_errors: int
    """Connect, read and write errors and timeouts together."""
    timeouts: int
    cpu_s: float
    """User + system CPU time of the wrk process, start to end."""
    command: tuple[str, ...]

    @property
    def errors(self) -> int:
        return self.error_statuses + self.socket_errors

    @property
    def cpu_per_request_s(self) -> float | None:
        return self.cpu_s / self.requests if self.requests > 0 else None

    @property
    def core_share(self) -> float | None:
        return self.cpu_s / self.duration_s if self.duration_s > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": "wrk",
            "command": list(self.command),
            "connections": self.connections,
            "threads": self.threads,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "rps": self.rps,
            "p50_s": self.p50_s,
            "p75_s": self.p75_s,
            "p90_s": self.p90_s,
            "p99_s": self.p99_s,
            "error_statuses": self.error_statuses,
            "socket_errors": self.socket_errors,
            "timeouts": self.timeouts,
            "cpu_s": self.cpu_s,
            "cpu_per_request_s": self.cpu_per_request_s,
            "core_share": self.core_share,
        }


def _lua_string(data: bytes) -> str:
    # Every byte as a three-digit decimal escape: any body survives, and no digit that follows can be
    # read as part of an escape.
    return '"' + "".join(f"\\{byte:03d}" for byte in data) + '"'


def wrk_script(target: Target) -> str:
    """The Lua script that makes wrk send ``target``'s request: its method, body and headers.

    wrk adds ``Host`` (from the URL) and, when there is a body, ``Content-Length``, as the Python
    generator does; an empty POST body still goes out with ``Content-Length: 0`` (an empty Lua string is
    true).
    """
    lines = [
        "-- Written by strato: the request the Python load generator sends, for wrk.",
        f"wrk.method = {_lua_string(target.method.encode('latin-1'))}",
        f"wrk.body = {_lua_string(target.body)}",
    ]
    for name, value in target.headers:
        if name.lower() != "content-length":
            key, text = _lua_string(name.encode("latin-1")), _lua_string(value.encode("latin-1"))
            lines.append(f"wrk.headers[{key}] = {text}")
    return "\n".join(lines) + "\n"


def _seconds(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit]


def parse_wrk_output(text: str) -> dict[str, float | int]:
    """wrk's ``--latency`` report -> its numbers (times in seconds); :class:`StratoError` if it is not one."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", text)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if total is None or rate is None:
        raise StratoError(f"could not read wrk's report:\n{text.strip()}")
    out: dict[str, float | int] = {
        "requests": int(total.group(1)),
        "duration_s": _seconds(total.group(2), total.group(3)),
        "rps": float(rate.group(1)),
    }
    for percent in _WRK_PERCENTILES:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
        if found is None:
            raise StratoError(f"wrk's report has no {percent}% latency (was it run with --latency?)")
        out[f"p{percent}_s"] = _seconds(found.group(1), found.group(2))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    counts = [int(value) for value in errors.groups()] if errors else [0, 0, 0, 0]
    out["socket_errors"] = sum(counts)
    out["timeouts"] = counts[3]
    statuses = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["error_statuses"] = int(statuses.group(1)) if statuses else 0
    return out


def run_wrk(
    target: Target,
    connections: int,
    duration_s: float,
    *,
    threads: int = 1,
    timeout_s: float = 10.0,
    wrk: str | None = None,
) -> WrkResult:
    """Drive ``target`` with wrk, closed loop: ``wrk -t<threads> -c<connections> -d<duration>s --latency``.

    wrk takes whole seconds, so ``duration_s`` and ``timeout_s`` are rounded (to at least 1). It sends the
    very request :func:`run_closed_loop` would, through a Lua script in a temporary file. Raises
    :class:`ConfigError` when wrk is not installed and :class:`StratoError` when it fails.
    """
    program = wrk or find_wrk()
    if program is None:
        raise ConfigError(f"wrk is not on PATH: {WRK_INSTALL_HINT}")
    if not 1 <= threads <= connections:
        raise ConfigError(f"wrk needs 1 <= threads <= connections, got {threads} and {connections}")
    seconds = max(1, round(duration_s))
    wait_s = max(1, math.ceil(timeout_s))
    with tempfile.NamedTemporaryFile("w", prefix="strato-wrk-", suffix=".lua") as script:
        script.write(wrk_script(target))
        script.flush()
        command = (
            program,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={wait_s}s",
            "--latency",
            "-s",
            script.name,
            target.url,
        )
        before = _children_cpu_s()
        try:
            proc = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=seconds + 2 * wait_s + 30,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StratoError(f"wrk did not finish within {exc.timeout:.0f} s") from exc
        except OSError as exc:
            raise StratoError(f"cannot run {program}: {exc.strerror or exc}") from exc
        cpu_s = _children_cpu_s() - before
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip()
        raise StratoError(f"wrk failed (exit status {proc.returncode}): {said}")
    numbers = parse_wrk_output(proc.stdout)
    return WrkResult(
        connections=connections,
        threads=threads,
        duration_s=float(numbers["duration_s"]),
        requests=int(numbers["requests"]),
        rps=float(numbers["rps"]),
        p50_s=float(numbers["p50_s"]),
        p75_s=float(numbers["p75_s"]),
        p90_s=float(numbers["p90_s"]),
        p99_s=float(numbers["p99_s"]),
        error_statuses=int(numbers["error_statuses"]),
        socket_errors=int(numbers["socket_errors"]),
        timeouts=int(numbers["timeouts"]),
        cpu_s=cpu_s,
        command=command,
    )


# --------------------------------------------------------------------------------------------- CLI


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"header must look like Name:Value, got {text!r}")
    return name.strip(), value.strip()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m strato.faas.live.loadgen",
        description="Open- or closed-loop HTTP/1.1 load generator.",
    )
    p.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8080/function/echo")
    p.add_argument("--mode", choices=("open", "closed"), required=True)
    p.add_argument("--rate", type=float, help="open loop: requests per second")
    p.add_argument("--connections", type=int, default=1, help="closed loop: concurrent connections")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds, after the warm-up")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds sent but not counted")
    p.add_argument("--arrival", choices=("constant", "poisson"), default="constant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-connections", type=int, default=256, help="open loop: connection cap")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    p.add_argument("--method", default="POST")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="request body text (UTF-8)")
    body.add_argument("--body-bytes", type=int, help="a body of N bytes")
    body.add_argument("--body-file", help="read the body from a file ('-': stdin)")
    p.add_argument("--header", type=_header, action="append", default=[], metavar="NAME:VALUE")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--latency-encoding", choices=LATENCY_ENCODINGS, default="f64")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.body is not None:
            body = args.body.encode()
        elif args.body_bytes is not None:
            if args.body_bytes < 0:
                raise ConfigError("--body-bytes must be >= 0")
            body = b"x" * args.body_bytes
        elif args.body_file is not None:
            body = sys.stdin.buffer.read() if args.body_file == "-" else Path(args.body_file).read_bytes()
        else:
            body = b""
        target = Target.from_url(args.url, body, tuple(args.header), args.method)
        if args.mode == "open":
            if args.rate is None:
                raise ConfigError("--mode open needs --rate")
            result = run_open_loop(
                target,
                args.rate,
                args.duration,
                warmup_s=args.warmup,
                arrival=args.arrival,
                seed=args.seed,
                max_connections=args.max_connections,
                timeout_s=args.timeout,
            )
        else:
            result = run_closed_loop(
                target, args.connections, args.duration, warmup_s=args.warmup, timeout_s=args.timeout
            )
    except (StratoError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        # Written whole with os.write on a blocking descriptor: through sys.stdout, about one output in
        # ten lost a stretch in the middle once it outgrew the pipe (seen as invalid JSON in the bench).
        data = (json.dumps(result.to_json(args.latency_encoding), separators=(",", ":")) + "\n").encode()
        sys.stdout.flush()
        descriptor = sys.stdout.fileno()
        os.set_blocking(descriptor, True)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    else:
        for key, value in result.summary().items():
            print(f"{key:>20}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
