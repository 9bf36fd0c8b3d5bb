"""The inside of a function instance: load the handler, then serve invocations until the gateway goes.

An instance starts with one inherited socket, its *control socket*, connected to the gateway. The first
frame on it is the instance's spec (JSON). The instance isolates itself (:mod:`.isolation`), imports the
handler and answers ``READY`` (or ``LOAD_FAILED`` with the error). Then, by backend:

* ``lean``: invocations arrive as frames on the control socket and results go back on it. Nothing else
  is on the path: one read (a frame larger than :data:`READ_SIZE` takes more) and one write per
  invocation.
* ``faasd``: like OpenFaaS's of-watchdog in HTTP mode. The instance is two processes: a watchdog that
  listens on a TCP port (bound before the network namespace is entered, so the provider can reach it)
  and reverse-proxies each request over HTTP to a function process that runs the handler behind its
  own small HTTP server. The control socket only carries ``READY`` and tells the instance when to exit.

The handler contract, kept close to OpenFaaS's python3-http template so its functions port easily:
``handle(event)`` or ``handle(event, context)``; ``event`` has ``body`` (bytes), ``text``, ``json()``,
``headers`` (lower-case names), ``method``, ``path`` and ``query``. It may return bytes, str, a JSON-able
value, ``(body, status)``, ``(body, status, headers)`` or ``{"statusCode", "body", "headers"}``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strato.faas.live import frames
from strato.faas.live.storage_client import Storage, StorageLink, StoreUnavailable

ResultTriple = tuple[int, list[tuple[str, str]], bytes]


@dataclass(frozen=True)
class InstanceSpec:
    """Everything an instance needs to start, sent by the gateway as the first frame."""

    instance_id: str
    function: str
    handler: str
    code_dir: str
    backend: str = "lean"
    env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 1
    cpu_timeout_s: float | None = None
    memory_mb: float | None = None
    uid: int | None = None
    network: bool = False
    sandbox: bool = True
    cgroup_procs: tuple[str, ...] = ()
    tmp_size_mb: int = 64
    cgroup_joined: bool = False
    host_support: dict[str, Any] | None = None
    max_response: int = 64 * 1024 * 1024
    hop_secret: str = ""
    """faasd: what the provider must show the watchdog (it listens on the host's loopback)."""

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> InstanceSpec:
        data = json.loads(payload)
        data["cgroup_procs"] = tuple(data.get("cgroup_procs", ()))
        return cls(**data)


class Event:
    """What a handler receives."""

    __slots__ = ("_head", "_headers", "body", "method", "path", "query")

    def __init__(self, method: str, target: str, headers: dict[str, str] | None, body: bytes) -> None:
        self.method = method
        self.path, _, self.query = target.partition("?")
        self._headers = headers
        self._head = b""
        self.body = body

    @classmethod
    def from_head(cls, head: bytes, body: bytes) -> Event:
        """An event from a request head the gateway wrote; its header lines are parsed on first use (most
        handlers never look at them, and parsing them is a good part of a warm invocation's CPU)."""
        method, target, lines = _split_head(head)
        event = cls(method, target, None, body)
        event._head = lines
        return event

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = _header_lines(self._head)
        return self._headers

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self._headers = value

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Context:
    """The optional second argument of a handler."""

    function: str
    instance_id: str
    storage: Storage = field(default_factory=lambda: Storage(None))
    """Object storage through the platform (``storage_client.Storage``)."""


class CpuTimeExceeded(Exception):
    """Raised inside the handler when the invocation used up its CPU-time budget."""


def _on_cpu_limit(signum: int, frame: object) -> None:
    raise CpuTimeExceeded


class LoadedFunction:
    """A handler imported and ready to be called with the platform's request representation."""

    def __init__(self, spec: InstanceSpec) -> None:
        self.spec = spec
        module_name, sep, attribute = spec.handler.partition(":")
        if not sep or not module_name or not attribute:
            raise ValueError(f"handler {spec.handler!r} must look like module:function")
        sys.path.insert(0, spec.code_dir)
        module = importlib.import_module(module_name)
        target = getattr(module, attribute, None)
        if not callable(target):
            raise AttributeError(f"module {module_name!r} has no callable {attribute!r}")
        self.call: Callable[..., Any] = target
        self.context = Context(spec.function, spec.instance_id)
        self.wants_context = _positional_arity(target) >= 2
        self.cpu_timeout_s = spec.cpu_timeout_s

    def invoke(self, method: str, target: str, headers: dict[str, str], body: bytes) -> ResultTriple:
        return self.run(Event(method, target, headers, body))

    def invoke_head(self, head: bytes, body: bytes) -> ResultTriple:
        """:meth:`invoke` with the request head as the gateway wrote it (the lean backend's INVOKE meta)."""
        return self.run(Event.from_head(head, body))

    def run(self, event: Event) -> ResultTriple:
        try:
            if self.cpu_timeout_s:
                _arm_cpu_limit(self.cpu_timeout_s)
            result = self.call(event, self.context) if self.wants_context else self.call(event)
            return _to_response(result)
        except StoreUnavailable as error:
            return _error(503, f"object store unavailable: {error}", function=self.spec.function)
        except CpuTimeExceeded:
            return _error(
                504,
                f"function {self.spec.function!r} exceeded its CPU-time limit of {self.cpu_timeout_s:g} s",
                fatal=True,
            )
        except Exception as error:
            lines = traceback.format_exception(error)
            return _error(
                500,
                f"{type(error).__name__}: {error}",
                traceback_tail="".join(lines[-3:]),
                function=self.spec.function,
            )


def _positional_arity(target: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for parameter in parameters if parameter.kind in kinds)


def _arm_cpu_limit(seconds: float) -> None:
    """Give the invocation about to start a CPU-time budget of ``seconds``: the soft ``RLIMIT_CPU`` (whole
    seconds, SIGXCPU when the process's CPU time reaches it) ends up more than ``seconds`` and at most
    ``seconds + 1`` above the CPU time used so far, with the hard limit infinite so it can be moved."""
    # The budget is per invocation, so the soft limit follows the CPU time used so far. Setting it to
    # int(used + seconds) + 1 before every invocation leaves headroom in (seconds, seconds + 1]; a limit
    # already inside that window is left as it is, which keeps the same guarantee (at least the full
    # budget, a runaway stopped within seconds + 1 of CPU) and makes the set rare: the window holds until
    # about a second of CPU has been used. The limit is read back rather than remembered, so this stays
    # exact when the handler or the kernel moved it (the kernel raises it by a second with each SIGXCPU)
    # and when invocations run in several threads. time.process_time() is the sum getrusage() gives, for
    # one cheaper system call.
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    used = time.process_time()
    if (
        hard == resource.RLIM_INFINITY
        and soft != resource.RLIM_INFINITY
        and seconds < soft - used <= seconds + 1
    ):
        return
    resource.setrlimit(resource.RLIMIT_CPU, (int(used + seconds) + 1, resource.RLIM_INFINITY))


FATAL_HEADER = "X-Strato-Instance-Fatal"


def _error(status: int, message: str, *, fatal: bool = False, **extra: Any) -> ResultTriple:
    headers = [("Content-Type", "application/json")]
    if fatal:
        headers.append((FATAL_HEADER, "1"))
    body = json.dumps({"error": message, "status": status, **extra}).encode()
    return status, headers, body


def _to_response(result: Any) -> ResultTriple:
    # The common answers first, with what the general path below gives them.
    kind = type(result)
    if kind is bytes:
        return 200, [("Content-Type", "application/octet-stream")], result
    if kind is str:
        return 200, [("Content-Type", "text/plain; charset=utf-8")], result.encode()
    status = 200
    headers: list[tuple[str, str]] = []
    if isinstance(result, dict) and "statusCode" in result:
        status = result["statusCode"]
        headers = _checked_headers(result.get("headers") or {})
        result = result.get("body", b"")
    elif isinstance(result, tuple):
        if not 2 <= len(result) <= 3:
            raise TypeError("a handler's tuple result must be (body, status) or (body, status, headers)")
        status = result[1]
        if len(result) == 3:
            headers = _checked_headers(result[2])
        result = result[0]
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        raise ValueError(f"the handler returned status {status!r}; a status must be an integer 200-599")
    has_type = any(name.lower() == "content-type" for name, _ in headers)
    if isinstance(result, bytes | bytearray | memoryview):
        body = bytes(result)
        default_type = "application/octet-stream"
    elif isinstance(result, str):
        body = result.encode()
        default_type = "text/plain; charset=utf-8"
    elif result is None:
        body = b""
        default_type = ""
    else:
        body = json.dumps(result).encode()
        default_type = "application/json"
    if default_type and not has_type:
        headers.append(("Content-Type", default_type))
    return status, headers, body


def _checked_headers(given: Any) -> list[tuple[str, str]]:
    """A handler's headers, refused with a message that names the culprit when a client could not be
    sent them: names must be tokens, values visible ASCII without CR, LF or NUL."""
    items = given.items() if isinstance(given, dict) else given
    headers = []
    for name, value in items:
        text = str(value).strip(" \t")
        if not isinstance(name, str) or not frames.HEADER_NAME.fullmatch(name):
            raise ValueError(f"the handler returned a bad header name {name!r}")
        if not frames.HEADER_TEXT.fullmatch(text):
            raise ValueError(
                f"the handler's header {name!r} has a value with control or non-ASCII characters: "
                f"{text[:60]!r}"
            )
        headers.append((name, text))
    return headers


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = sock.recv(size, socket.MSG_WAITALL)
    while len(data) < size:
        more = sock.recv(size - len(data), socket.MSG_WAITALL)
        if not more:
            raise EOFError
        data += more
    return data


def read_frame(sock: socket.socket) -> tuple[int, int, bytes, bytes]:
    """One frame, reading nothing past it (the spec frame: what follows may be another reader's)."""
    header = sock.recv(frames.HEADER_SIZE, socket.MSG_WAITALL)
    if len(header) < frames.HEADER_SIZE:
        if not header:
            raise EOFError
        header += _recv_exact(sock, frames.HEADER_SIZE - len(header))
    request_id, kind, meta_size, body_size = frames.HEADER.unpack(header)
    payload = _recv_exact(sock, meta_size + body_size) if meta_size + body_size else b""
    return request_id, kind, payload[:meta_size], payload[meta_size:]


READ_SIZE = 64 * 1024
"""The most the lean loop asks one read for: a frame up to this size (head and body) takes one recv."""


def read_frame_exact(sock: socket.socket) -> tuple[int, int, bytes, bytes]:
    """One frame in exact-size reads: its body arrives in one buffer and is never copied (a storage
    reply of many MB), at the price of three system calls."""
    header = _recv_exact(sock, frames.HEADER_SIZE)
    request_id, kind, meta_size, body_size = frames.HEADER.unpack(header)
    meta = _recv_exact(sock, meta_size) if meta_size else b""
    return request_id, kind, meta, _recv_exact(sock, body_size) if body_size else b""


class FrameReader:
    """The frames of a stream socket, each usually from one recv: what arrived whole is sliced into its
    meta and body. Bytes read past a frame stay for the next one, and a frame that did not arrive whole
    is completed with reads of exactly its rest."""

    __slots__ = ("pending", "size", "sock")

    def __init__(self, sock: socket.socket, size: int = READ_SIZE) -> None:
        self.sock = sock
        self.size = size
        self.pending = b""
        """Read and not yet returned: the start of the next frame."""

    def read_reply(self) -> tuple[int, int, bytes, bytes]:
        """The next frame when the caller expects a reply that may be large: read exactly, unless bytes
        of it were already read (never copied then: see :func:`read_frame_exact`)."""
        if self.pending:
            return self.read()
        return read_frame_exact(self.sock)

    def read(self) -> tuple[int, int, bytes, bytes]:
        """The next frame's request id, kind, meta and body; EOFError when the socket closes, even
        inside a frame (the gateway only closes an instance's socket to end it)."""
        data = self.pending
        while len(data) < frames.HEADER_SIZE:
            more = self.sock.recv(self.size)
            if not more:
                raise EOFError
            data += more
        request_id, kind, meta_size, body_size = frames.HEADER.unpack_from(data)
        body_at = frames.HEADER_SIZE + meta_size
        frame_end = body_at + body_size
        if len(data) < frame_end:
            self.pending = b""
            if len(data) >= body_at:
                # A large body (a storage reply of many MB): copied once, not joined and then sliced.
                rest = _recv_exact(self.sock, frame_end - len(data))
                head = data[frames.HEADER_SIZE : body_at]
                return request_id, kind, head, data[body_at:] + rest if len(data) > body_at else rest
            data += _recv_exact(self.sock, frame_end - len(data))
        else:
            self.pending = data[frame_end:]
        return request_id, kind, data[frames.HEADER_SIZE : body_at], data[body_at:frame_end]


def _header_lines(block: bytes) -> dict[str, str]:
    """Lower-cased names and stripped values of CRLF-separated header lines."""
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return headers


def _split_head(head: bytes) -> tuple[str, str, bytes]:
    """Method, target and the header lines of a request head the gateway wrote."""
    line, _, lines = head.partition(b"\r\n")
    method, target, _ = line.decode("latin-1").split(" ", 2)
    return method, target, lines


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, target and lower-cased headers of a request head the gateway wrote."""
    method, target, lines = _split_head(head)
    return method, target, _header_lines(lines)


def _header_block(headers: list[tuple[str, str]], *, internal: bool) -> bytes:
    """Header lines without hop-by-hop headers and, unless the response travels ``internal``-ly (the faasd
    hops, whose gateway strips them), without the platform's own ``X-Strato-*`` headers."""
    lines = []
    for name, value in headers:
        lowered = name.lower()
        if lowered not in frames.HOP_BY_HOP and (internal or not lowered.startswith("x-strato-")):
            lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def http_response(
    status: int, headers: list[tuple[str, str]], body: bytes, *, internal: bool = False
) -> bytes:
    """A complete HTTP/1.1 response (the faasd function server's): 204 and 304 carry no body."""
    block = _header_block(headers, internal=internal)
    framing = b"" if status in (204, 304) else b"Content-Length: %d\r\n" % len(body)
    reason = frames.REASONS.get(status, "Status").encode()
    head = b"HTTP/1.1 %d %s\r\n%s%s\r\n" % (status, reason, block, framing)
    return head if status in (204, 304) else head + body


LARGE_BODY = 64 * 1024
"""Above this a result's body is sent on its own instead of being copied into one buffer with its head."""


_RESULT_METAS: dict[tuple[int, tuple[tuple[str, str], ...]], tuple[bytes, bool]] = {}
"""Rendered RESULT metas (and whether they are fatal) by status and headers: a function answers with the
same few over and over, and rendering them is a good part of a warm invocation's CPU."""
RESULT_METAS_KEPT = 64
"""At most this many are kept (a function varying its headers per answer only empties the table)."""
RESULT_META_KEPT_SIZE = 1024
"""Larger metas are rendered each time, so the table stays small whatever a function answers."""


def _result_meta(status: int, headers: list[tuple[str, str]]) -> tuple[bytes, bool]:
    key = (status, tuple(headers))
    known = _RESULT_METAS.get(key)
    if known is None:
        fatal = any(name == FATAL_HEADER for name, _ in headers)
        known = frames.result_meta(status, _header_block(headers, internal=False), fatal=fatal), fatal
        if len(known[0]) <= RESULT_META_KEPT_SIZE:
            if len(_RESULT_METAS) >= RESULT_METAS_KEPT:
                _RESULT_METAS.clear()
            _RESULT_METAS[key] = known
    return known


def _send_result(sock: socket.socket, request_id: int, result: ResultTriple, limit: int) -> bool:
    """Send a RESULT frame; returns whether the instance must exit after it."""
    status, headers, out = result
    if len(out) > limit:
        # The gateway would kill an instance that sent it; say why instead, and live on.
        status, headers, out = _error(
            502, f"the function's response of {len(out)} bytes exceeds the platform's limit of {limit} bytes"
        )
    meta, fatal = _result_meta(status, headers)
    if len(out) < LARGE_BODY:
        sock.sendall(frames.encode(request_id, frames.RESULT, meta, out))
    else:
        sock.sendall(frames.HEADER.pack(request_id, frames.RESULT, len(meta), len(out)) + meta)
        sock.sendall(out)
    return fatal


def serve_lean(sock: socket.socket, function: LoadedFunction) -> None:
    """Answer invocation frames until the gateway closes the socket."""
    limit = function.spec.max_response
    reader = FrameReader(sock)
    read = reader.read
    send_lock = threading.Lock()
    concurrent = function.spec.concurrency > 1
    link = StorageLink(sock, reader.read_reply, send_lock, concurrent=concurrent)
    function.context = Context(function.spec.function, function.spec.instance_id, Storage(link))
    if not concurrent:
        invoke = function.invoke_head
        while True:
            try:
                request_id, kind, meta, body = read()
            except EOFError:
                return
            if kind != frames.INVOKE:
                sys.stderr.write(f"strato instance: unexpected frame kind {kind} while idle\n")
                os._exit(3)
            # Also before: what the gateway killed while the instance was idle is collected right away.
            if _child_exited[0]:
                reap_orphans()
            if _send_result(sock, request_id, invoke(meta, body), limit):
                return
            if _child_exited[0]:
                reap_orphans()
    running = [0]

    def run(request_id: int, meta: bytes, body: bytes) -> None:
        result = function.invoke_head(meta, body)
        with send_lock:
            if _send_result(sock, request_id, result, limit):
                os._exit(1)
            running[0] -= 1
            if running[0] == 0:
                reap_orphans()

    with ThreadPoolExecutor(function.spec.concurrency) as pool:
        while True:
            try:
                request_id, kind, meta, body = read()
            except EOFError:
                link.close()
                return
            if kind == frames.STORAGE_REPLY:
                link.deliver(request_id, meta, body)
                continue
            with send_lock:
                if running[0] == 0:
                    reap_orphans()
                running[0] += 1
            pool.submit(run, request_id, meta, body)


_child_exited = [False]
"""Set by the SIGCHLD handler of an instance that is pid 1: there may be something to reap."""


def _on_child_exit(signum: int, frame: object) -> None:
    _child_exited[0] = True


def watch_children() -> None:
    """Let :func:`reap_orphans` know when a child ended, so a warm invocation costs no system call."""
    if os.getpid() == 1:
        signal.signal(signal.SIGCHLD, _on_child_exit)


def reap_orphans(*, always: bool = False) -> None:
    """As pid 1 of its namespace the instance inherits every orphaned process: collect the finished ones
    while no invocation runs (so no handler's own wait() can lose its child's status to us)."""
    if not (always or _child_exited[0]) or os.getpid() != 1:
        return
    _child_exited[0] = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _serve_http_connection(sock: socket.socket, function: LoadedFunction) -> None:
    """The function process's own HTTP server on one connection from the watchdog (blocking)."""
    reader = sock.makefile("rb")
    # The watchdog going away (shutdown, a killed instance) ends the connection, not with a traceback.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        while True:
            request_line = reader.readline()
            if not request_line:
                return
            method, target, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                line = reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = reader.read(int(headers.get("content-length", "0")))
            status, out_headers, out = function.invoke(method, target, headers, body)
            # The fatal marker reaches the gateway through the watchdog and the provider.
            sock.sendall(http_response(status, out_headers, out, internal=True))
            if any(name == FATAL_HEADER for name, _ in out_headers):
                return


def serve_faasd(
    control: socket.socket, listener: socket.socket, function: LoadedFunction, ready: dict[str, Any]
) -> None:
    """Run the watchdog (this process) in front of a forked function process."""
    pairs = [socket.socketpair() for _ in range(max(1, function.spec.concurrency))]
    child = os.fork()
    if child == 0:
        listener.close()
        control.close()
        function.context = Context(
            function.spec.function,
            function.spec.instance_id,
            Storage(None, "context.storage runs on the lean backend only (strato faas serve --backend lean)"),
        )
        threads = []
        for watchdog_end, function_end in pairs:
            watchdog_end.close()
            thread = threading.Thread(
                target=_serve_http_connection, args=(function_end, function), daemon=True
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        os._exit(0)
    for _, function_end in pairs:
        function_end.close()
    # The gateway lets this process stay in the instance when it sweeps out stray ones.
    ready["function_pid"] = child
    control.sendall(frames.encode(0, frames.READY, json.dumps(ready).encode()))
    from strato.faas.live.watchdog import run_watchdog

    status = run_watchdog(
        control,
        listener,
        [watchdog_end for watchdog_end, _ in pairs],
        max_response=function.spec.max_response,
        hop_secret=function.spec.hop_secret,
    )
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, 0)
    os._exit(status)


BASE_ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
"""What every function sees besides its own ``envVars``, ``HOME`` and ``TMPDIR`` (docs/security.md)."""


def helper_environment() -> dict[str, str]:
    """The environment of the processes the server starts that will become instances: nothing of the
    server's own (its token, its credentials), only what imports strato from where the server did."""
    import strato

    package_root = str(Path(strato.__file__).resolve().parents[1])
    return {**BASE_ENVIRONMENT, "PYTHONPATH": package_root}


def instance_environment(function_env: dict[str, str], tmpdir: str) -> dict[str, str]:
    return {**BASE_ENVIRONMENT, "HOME": tmpdir, "TMPDIR": tmpdir, **function_env}


def _adopt_stdio(log_fd: int | None, control_fd: int) -> None:
    """Standard input from /dev/null, output to the function's log pipe, and no other descriptor than the
    control socket: a function must not reach the server's log, listening sockets or anything the
    template happened to hold."""
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    if log_fd is not None:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
    for fd in {null, log_fd} - {None, 0, 1, 2}:
        assert fd is not None
        os.close(fd)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != control_fd:
            with contextlib.suppress(OSError):  # the directory's own descriptor is already gone
                os.close(fd)
    os.set_inheritable(control_fd, False)
    # A pipe, not a terminal: without this, prints would reach the log only when a buffer fills.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]


def bootstrap(control: socket.socket, log_fd: int | None) -> None:
    """Run an instance on its control socket, its output going to ``log_fd`` (None: stdout and stderr
    already are the log); never returns."""
    _adopt_stdio(log_fd, control.fileno())
    os.environ.clear()
    try:
        _, _, meta, _ = read_frame(control)
        spec = InstanceSpec.from_json(meta)
    except (EOFError, ValueError, TypeError) as error:
        sys.stderr.write(f"strato instance: unreadable spec ({type(error).__name__}: {error})\n")
        os._exit(3)
    listener = None
    try:
        if spec.backend == "faasd":
            # Imported while the interpreter's files are all still reachable.
            import strato.faas.live.watchdog  # noqa: F401

            # Bound before the network namespace exists, so the provider on the host can connect to it.
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(64)
        warnings = _isolate(spec)
        tmpdir = os.environ.get("TMPDIR", "/tmp")
        os.environ.clear()
        os.environ.update(instance_environment(spec.env, tmpdir))
        os.chdir(spec.code_dir)
        function = LoadedFunction(spec)
        signal.signal(signal.SIGXCPU, _on_cpu_limit)
        watch_children()
    except BaseException as error:
        detail = "".join(traceback.format_exception_only(error)).strip()
        control.sendall(frames.encode(0, frames.LOAD_FAILED, detail.encode(errors="replace")))
        os._exit(1)
    ready: dict[str, Any] = {
        "pid": os.getpid(),
        "port": listener.getsockname()[1] if listener else None,
        "warnings": warnings,
    }
    if listener is not None:
        serve_faasd(control, listener, function, ready)
    control.sendall(frames.encode(0, frames.READY, json.dumps(ready).encode()))
    try:
        serve_lean(control, function)
    finally:
        os._exit(0)


def _isolate(spec: InstanceSpec) -> list[str]:
    if not spec.sandbox:
        return ["sandbox disabled for this server"]
    from strato.faas.live.isolation import HostSupport, SandboxSpec, enter_sandbox, probe_host

    support = HostSupport.from_json(spec.host_support) if spec.host_support else probe_host()
    enter_sandbox(
        SandboxSpec(
            name=spec.instance_id,
            code_dir=Path(spec.code_dir),
            uid=spec.uid,
            network=spec.network,
            tmp_size_mb=spec.tmp_size_mb,
            memory_mb=spec.memory_mb,
            cgroup_procs=tuple(Path(path) for path in spec.cgroup_procs),
            cgroup_joined=spec.cgroup_joined,
            threads=max(spec.concurrency, 1),
        ),
        support,
    )
    return list(support.warnings)


def main() -> None:
    """Entry point of a freshly spawned instance: ``python -m strato.faas.live.runtime FD``."""
    control = socket.socket(fileno=int(sys.argv[1]))
    bootstrap(control, None)


if __name__ == "__main__":
    main()
