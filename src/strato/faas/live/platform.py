"""The live platform's node: function instances, keep-alive driven by a policy object, a memory budget.

The node is the engine around a :class:`~strato.faas.policies.base.KeepAlivePolicy`, exactly as the
simulators are: it tells the policy what happened (an invocation arrived, an idle time ended, the app was
unloaded) and carries out its windows with timers. The unit of decision is the function (the paper's
application). Time is scaled: with ``time_scale = 60`` a policy's 10-minute window lasts 10 real seconds
and every duration the policy observes is multiplied by 60, so a replay is the trace in miniature.

Everything that changes an instance's state runs on the event loop thread, so "pick a warm instance" and
"unload an idle instance" can never interleave: an invocation that arrives while its function is being
unloaded finds no instance and starts a new one instead of racing the one going away (no 502).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from strato.errors import ConfigError
from strato.faas.live import frames
from strato.faas.live.forkserver import ForkServerClient
from strato.faas.live.frames import HOP_BY_HOP
from strato.faas.live.httpio import (
    DEFAULT_MAX_RESPONSE,
    AnyResponse,
    BodySink,
    ClientPool,
    InvalidResponse,
    RawResponse,
    Response,
    StreamedResponse,
    check_header_block,
    check_status,
    error_response,
    json_response,
)
from strato.faas.live.isolation import (
    HostSupport,
    InstanceCgroup,
    SandboxError,
    cleanup_cgroup_base,
    function_uid,
    probe_host,
    reap_stale_cgroup_bases,
)
from strato.faas.live.logs import FunctionLog, InstanceLog
from strato.faas.live.metrics import Labels, Registry, labels
from strato.faas.live.registry import FunctionSpec, FunctionStore
from strato.faas.live.runtime import FATAL_HEADER, InstanceSpec, helper_environment
from strato.faas.policies import parse_policy
from strato.faas.policies.base import NEVER, AppInfo, KeepAlivePolicy

BACKENDS = ("lean", "faasd")
SPAWN_MODES = ("fork", "fresh")
START_TIMEOUT_S = 30.0
ZYGOTES = 2
"""Pre-forked children the fork-server keeps in their own memory cgroups (see forkserver)."""
INTERNAL_HEADER_PREFIX = "x-strato-"
SWEEP_INTERVAL_S = 1.0
LOG_RATE = 1024 * 1024
"""Bytes a second an instance may write to its log before its writes block (logs.InstanceLog)."""


@dataclass(frozen=True)
class NodeConfig:
    state_dir: Path
    backend: str = "lean"
    spawn: str = "fork"
    policy: str = "fixed:10m"
    time_scale: float = 1.0
    memory_budget_mb: float = math.inf
    sandbox: bool = True
    tmp_size_mb: int = 64
    max_response: int = DEFAULT_MAX_RESPONSE
    """Largest response body an instance may return, in bytes (502 above, checked before buffering)."""
    pids_limit: int = 64
    """Processes and threads an instance may create beyond its own (cgroup pids.max)."""
    log_limit: int = 1024 * 1024
    """Bytes of a function's log kept on disk (plus one rotated file)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.spawn not in SPAWN_MODES:
            raise ConfigError(f"spawn must be one of {', '.join(SPAWN_MODES)}, not {self.spawn!r}")
        if not self.time_scale > 0:
            raise ConfigError("time scale must be positive")
        if not self.memory_budget_mb > 0:
            raise ConfigError("memory budget must be positive")
        if self.max_response <= 0 or self.pids_limit <= 0 or self.log_limit <= 0:
            raise ConfigError("the response, pids and log limits must be positive")


Invocation = tuple[str, str, dict[str, str], bytes, bytes | None]
"""method, target as the function sees it, headers (checked by the gateway's parser), body, and the
header lines to pass on as the parser rendered them (None: render them from ``headers``)."""


def _request_head(
    method: str, target: str, headers: dict[str, str], body: bytes, forward: bytes | None
) -> bytes:
    """The head an instance gets: the gateway's own rendering of a request it parsed strictly, without
    framing headers (the body travels whole) or the platform's ``X-Strato-*`` headers."""
    if forward is None:
        forward = "\r\n".join(
            f"{name}: {value}"
            for name, value in headers.items()
            if name not in HOP_BY_HOP and not name.startswith(INTERNAL_HEADER_PREFIX)
        ).encode("latin-1")
    separator = b"\r\n" if forward else b""
    return b"%s %s HTTP/1.1\r\n%s%scontent-length: %d" % (
        method.encode("ascii"),
        target.encode("latin-1"),
        forward,
        separator,
        len(body),
    )


class InvokeFailed(Exception):
    """An invocation the gateway answers with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class InstanceDied(ConnectionError):
    pass


class InstanceMisbehaved(ConnectionError):
    """The instance broke the frame protocol (sizes over the limits, a malformed result): it is killed."""


STREAM_ABOVE = 256 * 1024
"""Result bodies larger than this are forwarded to the client as they arrive instead of being buffered."""


class Instance:
    """One running copy of a function: an OS process (group) and the gateway's socket to it."""

    def __init__(self, function: FunctionState, instance_id: str) -> None:
        self.function = function
        self.spec = function.spec
        self.id = instance_id
        self.state = "starting"
        self.inflight = 0
        self.pid: int | None = None
        self.port: int | None = None
        self.channel: InstanceChannel | None = None
        self.cgroup: InstanceCgroup | None = None
        self.cgroup_joined = False
        self.fatal = False
        """The instance said it exits after its current answer (e.g. its CPU-time limit was hit)."""
        self.started_at = 0.0
        self.ready_at = 0.0
        self.idle_since: float | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.hop_secret = secrets.token_urlsafe(16)
        self.function_pid: int | None = None
        """faasd: the function process's pid inside the instance's pid namespace (allowed to stay)."""

    def kill(self) -> None:
        if self.pid is not None and self.channel is not None and not self.channel.closed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)


class ResultStream:
    """A result body on its way from an instance to a client, never buffered whole (a BodySource)."""

    def __init__(self, channel: InstanceChannel, length: int) -> None:
        self.channel = channel
        self.remaining = length
        self.sink: BodySink | None = None
        self.early: list[bytes] = []
        self.abandoned = False
        self.ended = False
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.progressed_at = time.perf_counter()

    def feed(self, data: bytes) -> bytes:
        """Take this stream's part of ``data``; returns what follows the body."""
        self.progressed_at = time.perf_counter()
        take, rest = (
            (data, b"") if len(data) <= self.remaining else (data[: self.remaining], data[self.remaining :])
        )
        self.remaining -= len(take)
        if self.sink is not None:
            self.sink.body_data(take)
        elif not self.abandoned:
            self.early.append(take)
        if self.remaining == 0:
            self._end()
        return rest

    def _end(self) -> None:
        self.ended = True
        self.channel.stream_done(self)
        if self.sink is not None:
            self.sink.body_end()
        if not self.finished.done():
            self.finished.set_result(None)

    def fail(self) -> None:
        """The instance went away mid-body."""
        self.ended = True
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.body_abort()
        if not self.finished.done():
            self.finished.set_result(None)

    def attach(self, sink: BodySink) -> None:
        self.sink = sink
        for data in self.early:
            sink.body_data(data)
        self.early.clear()
        if self.ended:
            sink.body_end() if self.remaining == 0 else sink.body_abort()
        else:
            self.channel.resume_reading()

    def pause(self) -> None:
        self.channel.pause_reading()

    def resume(self) -> None:
        self.channel.resume_reading()

    def abandon(self) -> None:
        self.abandoned = True
        self.sink = None
        self.early.clear()
        self.channel.resume_reading()


class InstanceChannel(asyncio.Protocol):
    """The gateway's end of an instance's control socket (and, for the lean backend, its data path).

    Everything read here comes from code the platform does not trust: sizes are checked before anything
    is buffered, results are parsed and checked, and an instance that breaks the protocol is killed."""

    def __init__(self, node: Node, instance: Instance) -> None:
        self.node = node
        self.instance = instance
        self.max_response = node.config.max_response
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: dict[int, asyncio.Future[AnyResponse]] = {}
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.ids = itertools.count(1)
        self.closed = False
        self.stream: ResultStream | None = None
        self.violation: str | None = None
        self.paused = False
        """Reading is paused: a client takes a streamed body slowly, or has not taken it yet."""
        self.checked_meta: tuple[bytes, tuple[int, bytes] | None] = (b"\x00", None)
        """The last result status and header lines from this instance, and their checked form."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.fail()
        died: ConnectionError = (
            InstanceMisbehaved(self.violation)
            if self.violation
            else InstanceDied(f"instance {self.instance.id} exited")
        )
        if not self.ready.done():
            self.ready.set_exception(died)
        for future in self.pending.values():
            if not future.done():
                future.set_exception(died)
        self.pending.clear()
        self.node.instance_gone(self.instance)

    def send(self, kind: int, meta: bytes, body: bytes = b"") -> None:
        assert self.transport is not None
        self.transport.write(frames.encode(0, kind, meta, body))

    def invoke(self, kind: int, head: bytes, body: bytes) -> asyncio.Future[AnyResponse]:
        if self.closed or self.transport is None:
            raise InstanceDied(f"instance {self.instance.id} is gone")
        request_id = next(self.ids)
        future: asyncio.Future[AnyResponse] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        self.transport.write(frames.encode(request_id, kind, head, body))
        return future

    def buffered_bytes(self) -> int:
        stream = self.stream
        return len(self.buffer) + (sum(map(len, stream.early)) if stream is not None else 0)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.paused = False
            if self.stream is not None:
                self.stream.progressed_at = time.perf_counter()
            self.transport.resume_reading()

    def stream_done(self, stream: ResultStream) -> None:
        if self.stream is stream:
            self.stream = None
        self.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.violation is not None:
            return
        if self.stream is not None:
            data = self.stream.feed(data)
            if not data:
                return
        buffer = self.buffer
        buffer += data
        header_size = frames.HEADER_SIZE
        while len(buffer) >= header_size and self.violation is None:
            request_id, kind, meta_size, body_size = frames.HEADER.unpack_from(buffer)
            if kind not in (frames.RESULT, frames.READY, frames.LOAD_FAILED):
                self.misbehave(f"sent a frame of unknown kind {kind}")
                return
            if meta_size > frames.MAX_META or body_size > self.max_response:
                self.misbehave(
                    f"sent a response of {body_size} bytes with {meta_size} bytes of headers; the limits "
                    f"are {self.max_response} and {frames.MAX_META} bytes (--max-response)"
                )
                return
            meta_end = header_size + meta_size
            if kind == frames.RESULT and body_size > STREAM_ABOVE:
                if len(buffer) < meta_end:
                    return
                meta = bytes(buffer[header_size:meta_end])
                rest = bytes(buffer[meta_end:])
                buffer.clear()
                self._start_stream(request_id, meta, body_size)
                if rest:
                    self.data_received(rest)
                return
            end = meta_end + body_size
            if len(buffer) < end:
                return
            meta = bytes(buffer[header_size:meta_end])
            body = bytes(buffer[meta_end:end])
            del buffer[:end]
            if kind == frames.RESULT:
                self._result(request_id, meta, body)
            elif kind == frames.READY and not self.ready.done():
                try:
                    self.ready.set_result(_ready_info(meta))
                except ValueError as error:
                    self.misbehave(f"sent an unreadable READY ({error})")
            elif kind == frames.LOAD_FAILED and not self.ready.done():
                self.ready.set_exception(InvokeFailed(500, meta.decode(errors="replace")))

    def _checked_result(self, meta: bytes) -> tuple[int, bytes] | None:
        if meta == self.checked_meta[0]:
            # A function answers with the same status and headers nearly every time: checked once.
            return self.checked_meta[1]
        parsed = frames.parse_result_meta(meta)
        if parsed is None:
            self.misbehave(f"sent a result with a malformed status line {meta[:40]!r}")
            return None
        status, fatal, block = parsed
        if fatal:
            self.instance.fatal = True
        try:
            checked = (check_status(status), check_header_block(block))
        except InvalidResponse as error:
            self.misbehave(f"returned an invalid response: {error}")
            return None
        if not fatal:
            self.checked_meta = (meta, checked)
        return checked

    def _result(self, request_id: int, meta: bytes, body: bytes) -> None:
        checked = self._checked_result(meta)
        if checked is None:
            return  # the instance is being killed; its requests fail when its socket closes
        future = self.pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(RawResponse(checked[0], checked[1], body))

    def _start_stream(self, request_id: int, meta: bytes, length: int) -> None:
        checked = self._checked_result(meta)
        if checked is None:
            return
        stream = ResultStream(self, length)
        self.stream = stream
        future = self.pending.pop(request_id, None)
        if future is None or future.done():
            stream.abandon()  # nobody waits for it any more (timed out): drop it as it comes
            return
        # Until a client connection takes the stream, the instance waits in its send.
        self.pause_reading()
        future.set_result(StreamedResponse(checked[0], checked[1], length, stream))

    def misbehave(self, what: str) -> None:
        self.violation = f"the instance of {self.instance.spec.name!r} {what}; it was killed"
        self.node.log_for(self.instance.spec.name).event(self.instance.id, self.violation)
        self.buffer.clear()
        self.instance.kill()
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _fail_waiters(function: FunctionState, failure: InvokeFailed) -> None:
    while function.waiters:
        waiter = function.waiters.popleft()
        if not waiter.done():
            waiter.set_exception(failure)


def _namespace_pid(pid: int) -> int | None:
    """The pid of host process ``pid`` inside its own (innermost) pid namespace."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def _ready_info(meta: bytes) -> dict[str, Any]:
    info = json.loads(meta)
    if not isinstance(info, dict):
        raise ValueError("not a JSON object")
    port, function_pid = info.get("port"), info.get("function_pid")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise ValueError(f"bad port {port!r}")
    if function_pid is not None and not (isinstance(function_pid, int) and function_pid > 1):
        raise ValueError(f"bad function pid {function_pid!r}")
    return info


@dataclass
class FunctionStats:
    invocations: int = 0
    cold_starts: int = 0
    scale_outs: int = 0
    prewarms: int = 0
    unloads: int = 0
    evictions: int = 0
    errors: int = 0
    start_failures: int = 0
    wasted_mb_s: float = 0.0
    """Memory held by idle instances, in MiB x policy-time seconds."""


@dataclass
class FunctionState:
    spec: FunctionSpec
    policy_state: Any
    instances: list[Instance] = field(default_factory=list)
    inflight: int = 0
    waiters: deque[asyncio.Future[Instance]] = field(default_factory=deque)
    idle_since: float | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    rank: float | None = None
    stats: FunctionStats = field(default_factory=FunctionStats)
    retired: list[FunctionSpec] = field(default_factory=list)
    removed: bool = False
    last_released: Instance | None = None

    def live(self) -> list[Instance]:
        return [instance for instance in self.instances if instance.state != "stopping"]


class Node:
    """Instances, keep-alive and the memory budget of one machine."""

    def __init__(self, config: NodeConfig, policy: KeepAlivePolicy | None = None) -> None:
        self.config = config
        self.policy = policy or parse_policy(config.policy)
        self.functions: dict[str, FunctionState] = {}
        self.logs: dict[str, FunctionLog] = {}
        self._metric_keys: dict[tuple[str, int], tuple[Labels, Labels]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.provider_secret = secrets.token_urlsafe(32)
        self.used_mb = 0.0
        self.clock = 0.0
        self.ids = itertools.count(1)
        self.support: HostSupport | None = probe_host() if config.sandbox else None
        self.forkserver: ForkServerClient | None = None
        self.provider: asyncio.subprocess.Process | None = None
        self.provider_pool: ClientPool | None = None
        self.started_at = 0.0
        self.start_samples: deque[float] = deque(maxlen=10_000)
        """Recent instance start times (spawn to handler loaded), for benchmarks."""
        self.metrics = Registry()
        self.m_invocations = self.metrics.counter(
            "strato_faas_invocations_total", "Invocations answered, by function and HTTP status"
        )
        self.m_cold = self.metrics.counter(
            "strato_faas_cold_starts_total", "Invocations that found their function unloaded"
        )
        self.m_latency = self.metrics.histogram(
            "strato_faas_request_duration_seconds", "Gateway-measured invocation latency"
        )
        self.m_start = self.metrics.histogram(
            "strato_faas_instance_start_seconds", "Time from spawn to handler loaded, by spawn mode"
        )
        self.m_events = self.metrics.counter(
            "strato_faas_keepalive_events_total", "Keep-alive actions: unload, prewarm, evict"
        )
        self.metrics.gauge("strato_faas_instances", "Instances by function and state", self._instance_gauge)
        self.metrics.gauge(
            "strato_faas_memory_allocated_mb",
            "Memory reserved by live instances",
            lambda: [((), self.used_mb)],
        )
        self.metrics.gauge(
            "strato_faas_memory_budget_mb",
            "The node's memory budget",
            lambda: (
                [((), self.config.memory_budget_mb)] if math.isfinite(self.config.memory_budget_mb) else []
            ),
        )

    def buffered_bytes(self) -> int:
        return sum(
            instance.channel.buffered_bytes()
            for function in self.functions.values()
            for instance in function.instances
            if instance.channel is not None
        )

    def _instance_gauge(self) -> list[tuple[tuple[tuple[str, str], ...], float]]:
        rows: list[tuple[tuple[tuple[str, str], ...], float]] = []
        for name, function in sorted(self.functions.items()):
            for state in ("starting", "ready"):
                count = sum(1 for instance in function.instances if instance.state == state)
                rows.append(((("function", name), ("state", state)), float(count)))
        return rows

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.started_at = self.now()
        if self.support is not None:
            reap_stale_cgroup_bases(self.support)
        if self.config.spawn == "fork":
            zygotes = ZYGOTES if self.support is not None and self.support.cgroup else 0
            self.forkserver = await ForkServerClient.start(self.support, zygotes=zygotes)
        if self.config.backend == "faasd":
            await self._start_provider()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweep)

    def _sweep(self) -> None:
        """Once a second, off the invocation path: processes that outlived their invocation in idle
        instances are killed, and a response body that stopped coming ends its instance."""
        now = self.now()
        strays = self.support is not None and "pid" in self.support.namespaces
        for function in list(self.functions.values()):
            for instance in list(function.instances):
                channel = instance.channel
                if channel is not None and channel.stream is not None:
                    stream = channel.stream
                    if not channel.paused and now - stream.progressed_at > instance.spec.timeout_s:
                        channel.misbehave(
                            f"stopped sending its response body for {instance.spec.timeout_s:g} s"
                        )
                elif (
                    strays
                    and instance.state == "ready"
                    and instance.inflight == 0
                    and instance.idle_since is not None
                    and now - instance.idle_since >= SWEEP_INTERVAL_S
                ):
                    killed = self._kill_strays(instance)
                    if killed:
                        self.log_for(function.spec.name).event(
                            instance.id,
                            f"killed {killed} process(es) still running after the invocations ended",
                        )
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweep)

    def _kill_strays(self, instance: Instance) -> int:
        """Kill every process of an idle instance but its waiter, the instance itself (pid 1 of its
        namespace) and the faasd function process. Returns how many were killed."""
        cgroup = instance.cgroup
        if cgroup is None:
            return 0
        pids = cgroup.pids()
        expected = 2 + (instance.function_pid is not None)
        if len(pids) <= expected:
            return 0
        killed = 0
        keep = {1, instance.function_pid}
        for pid in pids:
            if pid == instance.pid or _namespace_pid(pid) in keep:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed

    async def _start_provider(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        port = listener.getsockname()[1]
        self.provider = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "strato.faas.live.provider",
            str(listener.fileno()),
            str(self.config.max_response),
            pass_fds=(listener.fileno(),),
            stdin=asyncio.subprocess.PIPE,
        )
        listener.close()
        assert self.provider.stdin is not None
        self.provider.stdin.write(self.provider_secret.encode() + b"\n")
        await self.provider.stdin.drain()
        self.provider.stdin.close()
        self.provider_pool = ClientPool.tcp("127.0.0.1", port, max_response=self.config.max_response)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for function in self.functions.values():
            self._cancel_timers(function)
            for instance in list(function.instances):
                self._stop_instance(instance)
        if self.forkserver is not None:
            await self.forkserver.stop()
        if self.provider_pool is not None:
            self.provider_pool.close()
        if self.provider is not None:
            self.provider.terminate()
            await self.provider.wait()
        await asyncio.sleep(0.05)
        for function in self.functions.values():
            for instance in function.instances:
                if instance.cgroup is not None:
                    instance.cgroup.remove()
        if self.support is not None:
            cleanup_cgroup_base(self.support)

    # ---- time ------------------------------------------------------------------------------------

    def policy_us(self, real_seconds: float) -> int:
        return round(real_seconds * self.config.time_scale * 1e6)

    def real_seconds(self, policy_us: int) -> float:
        return math.inf if policy_us >= NEVER else policy_us / 1e6 / self.config.time_scale

    def now(self) -> float:
        # Not loop.time(): uvloop's clock counts whole milliseconds, too coarse for cold starts.
        return time.perf_counter()

    # ---- functions -------------------------------------------------------------------------------

    def install(self, spec: FunctionSpec) -> None:
        """Make ``spec`` the active version; instances of an older version retire as they go idle."""
        current = self.functions.get(spec.name)
        if current is None:
            state = self.policy.new_state(AppInfo(spec.memory_mb))
            self.functions[spec.name] = FunctionState(spec, state)
            return
        current.retired.append(current.spec)
        current.spec = spec
        for instance in list(current.instances):
            if instance.inflight == 0:
                self._stop_instance(instance)

    def log_for(self, name: str) -> FunctionLog:
        log = self.logs.get(name)
        if log is None:
            log = self.logs[name] = FunctionLog(
                self.config.state_dir / "logs", name, limit=self.config.log_limit, rate=LOG_RATE
            )
        return log

    def remove(self, name: str) -> FunctionState | None:
        log = self.logs.pop(name, None)
        if log is not None:
            log.delete()
        function = self.functions.pop(name, None)
        if function is not None:
            function.removed = True
            function.retired.clear()
            self._cancel_timers(function)
            for instance in list(function.instances):
                instance.kill()
                self._stop_instance(instance)
            for waiter in function.waiters:
                if not waiter.done():
                    waiter.set_exception(InvokeFailed(404, f"function {name!r} was removed"))
        return function

    # ---- invocation ------------------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        forward: bytes | None = None,
    ) -> AnyResponse | asyncio.Future[AnyResponse]:
        """Answer an invocation: a response at once (errors) or a future of it.

        ``target`` is the path as the function sees it.

        A warm invocation is dispatched right here, with callbacks instead of a task, because on the lean
        backend the gateway's own Python overhead is most of the latency that is left.
        """
        function = self.functions.get(name)
        if function is None:
            return error_response(404, f"no function named {name!r}")
        spec = function.spec
        if function.inflight >= spec.max_concurrency:
            return error_response(
                429, f"function {name!r} is at its concurrency limit of {spec.max_concurrency}", function=name
            )
        started = self.now()
        function.stats.invocations += 1
        self._on_arrival(function, started)
        function.inflight += 1
        request = (method, target, headers, body, forward)
        instance = self._warm_instance(function)
        if instance is not None:
            self._occupy(instance)
            return self._dispatch(function, instance, started, request)
        return asyncio.ensure_future(self._invoke_after_start(function, started, request))

    async def _invoke_after_start(
        self, function: FunctionState, started: float, request: Invocation
    ) -> AnyResponse:
        try:
            instance = await self._acquire(function)
        except InvokeFailed as failure:
            return self._finish(function, None, started, self._failure_response(function, failure))
        return await self._dispatch(function, instance, started, request)

    def _dispatch(
        self,
        function: FunctionState,
        instance: Instance,
        started: float,
        request: Invocation,
    ) -> asyncio.Future[AnyResponse]:
        """Send to ``instance``; the returned future resolves once the bookkeeping is done."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[AnyResponse] = loop.create_future()
        method, target, headers, body, forward = request
        sent: asyncio.Future[Any]
        try:
            if self.config.backend == "lean":
                assert instance.channel is not None
                sent = instance.channel.invoke(
                    frames.INVOKE, _request_head(method, target, headers, body, forward), body
                )
            else:
                assert self.provider_pool is not None
                forwarded = {
                    key: value for key, value in headers.items() if not key.startswith(INTERNAL_HEADER_PREFIX)
                }
                forwarded["X-Strato-Instance"] = instance.id
                forwarded["X-Strato-Hop"] = self.provider_secret
                sent = asyncio.ensure_future(self.provider_pool.request(method, target, forwarded, body))
        except InstanceDied:
            sent = loop.create_future()
            sent.set_exception(InstanceDied(f"instance {instance.id} is gone"))
        timed_out: list[bool] = []

        def on_timeout() -> None:
            timed_out.append(True)
            if not sent.done():
                sent.cancel()

        timer = loop.call_later(instance.spec.timeout_s, on_timeout)

        def on_sent(done: asyncio.Future[Any]) -> None:
            timer.cancel()
            response = self._response_from(instance, done, timed_out=bool(timed_out))
            if isinstance(response, StreamedResponse):
                # The client gets the head now; the instance stays busy until its body has gone through.
                stream = cast(ResultStream, response.source)
                stream.finished.add_done_callback(
                    lambda _: self._finish(function, instance, started, response)
                )
                outcome.set_result(response)
                return
            outcome.set_result(self._finish(function, instance, started, response))

        sent.add_done_callback(on_sent)
        return outcome

    def _response_from(
        self, instance: Instance, done: asyncio.Future[Any], *, timed_out: bool
    ) -> AnyResponse:
        function = instance.function
        name = instance.spec.name
        if timed_out or done.cancelled():
            instance.kill()
            self._stop_instance(instance)
            failure = InvokeFailed(
                504,
                f"function {name!r} timed out after {instance.spec.timeout_s:g} s; its instance was killed",
            )
            self.log_for(name).event(instance.id, str(failure))
            return self._failure_response(function, failure)
        error = done.exception()
        if error is not None:
            if not isinstance(error, ConnectionError):
                failure = InvokeFailed(500, f"internal error: {type(error).__name__}: {error}")
                return self._failure_response(function, failure)
            self._stop_instance(instance)
            if function.removed:
                return self._failure_response(
                    function, InvokeFailed(404, f"function {name!r} was removed during the request")
                )
            message = self._death_message(instance, error)
            self.log_for(name).event(instance.id, message)
            return self._failure_response(function, InvokeFailed(502, message))
        response: AnyResponse = done.result()
        if isinstance(response, StreamedResponse):
            return response
        if isinstance(response, RawResponse):
            if instance.fatal:
                instance.kill()
                self._stop_instance(instance)
            return response
        if response.header(FATAL_HEADER):
            instance.kill()
            self._stop_instance(instance)
        if any(key.lower().startswith(INTERNAL_HEADER_PREFIX) for key, _ in response.headers):
            response.headers = [
                (key, value)
                for key, value in response.headers
                if not key.lower().startswith(INTERNAL_HEADER_PREFIX)
            ]
        return response

    def _death_message(self, instance: Instance, error: BaseException) -> str:
        name = instance.spec.name
        if isinstance(error, InstanceMisbehaved):
            return str(error)
        cgroup = instance.cgroup
        if cgroup is not None:
            with contextlib.suppress(SandboxError, OSError):
                if cgroup.oom_killed():
                    return (
                        f"the instance of {name!r} was killed by its memory limit of "
                        f"{instance.spec.memory_mb:g} MiB during the request; a new one starts on the "
                        "next call"
                    )
        return f"the instance of {name!r} died during the request; a new one starts on the next call"

    def _failure_response(self, function: FunctionState, failure: InvokeFailed) -> Response:
        function.stats.errors += 1
        return error_response(failure.status, str(failure), function=function.spec.name)

    def _finish(
        self, function: FunctionState, instance: Instance | None, started: float, response: AnyResponse
    ) -> AnyResponse:
        function.inflight -= 1
        if instance is not None:
            self._release(instance)
        name = function.spec.name
        if function.inflight == 0 and self.functions.get(name) is function:
            self._on_idle(function)
        keys = self._metric_keys.get((name, response.status))
        if keys is None:
            keys = self._metric_keys[(name, response.status)] = (
                labels(function=name, code=str(response.status)),
                labels(function=name),
            )
        self.m_invocations.inc_key(keys[0])
        self.m_latency.observe_key(keys[1], self.now() - started)
        return response

    def _warm_instance(self, function: FunctionState) -> Instance | None:
        if function.waiters:
            return None
        # The instance released last is free nearly always under load: no scan over all instances.
        last = function.last_released
        if (
            last is not None
            and last.state == "ready"
            and last.inflight < last.spec.concurrency
            and last.spec is function.spec
        ):
            return last
        for instance in function.instances:
            if (
                instance.state == "ready"
                and instance.inflight < instance.spec.concurrency
                and instance.spec is function.spec
            ):
                return instance
        return None

    def _on_arrival(self, function: FunctionState, now: float) -> None:
        if function.inflight:
            self.policy.on_invocation(function.policy_state, cold=False, clock=self.clock)
            return
        self._cancel_timers(function)
        function.rank = None
        if function.idle_since is not None:
            self.policy.on_idle_time(function.policy_state, self.policy_us(now - function.idle_since))
            function.idle_since = None
        cold = not function.live()
        if cold:
            function.stats.cold_starts += 1
            self.m_cold.inc(function=function.spec.name)
        self.policy.on_invocation(function.policy_state, cold=cold, clock=self.clock)

    async def _acquire(self, function: FunctionState) -> Instance:
        if function.removed:
            # Removed between the request's arrival and now: its code is gone, do not start it.
            raise InvokeFailed(404, f"function {function.spec.name!r} was removed")
        instance = self._warm_instance(function)
        if instance is not None:
            self._occupy(instance)
            return instance
        waiter: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        function.waiters.append(waiter)
        starting = sum(1 for instance in function.instances if instance.state == "starting")
        if (
            len(function.waiters) > starting * function.spec.concurrency
            and len(function.live()) < function.spec.max_instances
        ):
            reason = "scale-out" if function.live() else "cold"
            try:
                self._start_for_waiters(function, reason)
            except InvokeFailed:
                function.waiters.remove(waiter)
                raise
        return await waiter

    def _occupy(self, instance: Instance) -> None:
        if instance.inflight == 0 and instance.idle_since is not None:
            self._account_idle(instance, self.now())
        instance.inflight += 1

    def _release(self, instance: Instance) -> None:
        instance.inflight -= 1
        if instance.state != "ready":
            return
        function = instance.function
        if instance.spec is not function.spec and instance.inflight == 0:
            self._stop_instance(instance)
            return
        if instance.inflight == 0:
            instance.idle_since = self.now()
        function.last_released = instance
        if function.waiters:
            self._hand_out(function)

    def _hand_out(self, function: FunctionState) -> None:
        for instance in function.instances:
            while (
                function.waiters
                and instance.state == "ready"
                and instance.spec is function.spec
                and instance.inflight < instance.spec.concurrency
            ):
                waiter = function.waiters.popleft()
                if not waiter.done():
                    self._occupy(instance)
                    waiter.set_result(instance)

    def _start_for_waiters(self, function: FunctionState, reason: str) -> None:
        instance = self._new_instance(function, reason=reason)
        asyncio.get_running_loop().create_task(self._boot_for_waiters(instance, reason))

    async def _boot_for_waiters(self, instance: Instance, reason: str) -> None:
        function = instance.function
        try:
            await self._boot(instance, reason)
        except InvokeFailed as failure:
            function.stats.start_failures += 1
            if instance.spec is not function.spec and function.waiters and not function.removed:
                # The function was updated while this instance started (its old code may be gone):
                # the requests waiting for it get an instance of the current code instead.
                self._restart_for_waiters(function)
                return
            # The requests waiting for this start have nowhere else to go unless another instance is
            # coming or already serving.
            if not any(
                other.state in ("starting", "ready") and other.spec is function.spec
                for other in function.instances
            ):
                _fail_waiters(function, failure)
            return
        if instance.spec is not function.spec:
            self._stop_instance(instance)
            if function.waiters and not function.removed:
                self._restart_for_waiters(function)
            return
        self._hand_out(function)

    def _restart_for_waiters(self, function: FunctionState) -> None:
        if any(i.state == "starting" and i.spec is function.spec for i in function.instances):
            return  # one is already coming for them
        try:
            self._start_for_waiters(function, "cold")
        except InvokeFailed as failure:
            _fail_waiters(function, failure)

    # ---- instances -------------------------------------------------------------------------------

    async def trial_load(self, spec: FunctionSpec) -> None:
        """Start one instance of ``spec`` in its sandbox, which proves the code imports, then stop it.

        Raises InvokeFailed naming the problem (the import error, or an OOM kill while loading)."""
        instance = await self.start_instance(FunctionState(spec, None), reason="trial", spec=spec)
        self._stop_instance(instance)

    async def start_instance(
        self, function: FunctionState, *, reason: str, spec: FunctionSpec | None = None
    ) -> Instance:
        """Spawn an instance and wait until its handler is loaded."""
        return await self._boot(self._new_instance(function, reason=reason, spec=spec), reason)

    def _new_instance(
        self, function: FunctionState, *, reason: str, spec: FunctionSpec | None = None
    ) -> Instance:
        """Reserve memory and count a starting instance, synchronously, so that every request deciding
        whether to start another one sees it."""
        spec = spec or function.spec
        if reason != "trial" and not self._reserve(spec.memory_mb, evict=reason != "prewarm"):
            raise InvokeFailed(
                503,
                f"node memory budget of {self.config.memory_budget_mb:g} MiB is full; "
                f"{spec.name!r} needs {spec.memory_mb:g} MiB",
            )
        instance = Instance(function, f"{spec.name[:40]}-{next(self.ids)}")
        instance.spec = spec
        if reason != "trial":
            function.instances.append(instance)
            if reason == "scale-out":
                function.stats.scale_outs += 1
        return instance

    async def _boot(self, instance: Instance, reason: str) -> Instance:
        spec = instance.spec
        loop = asyncio.get_running_loop()
        instance.started_at = self.now()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_read, log_write = os.pipe2(os.O_CLOEXEC)
        try:
            await loop.connect_read_pipe(
                lambda: InstanceLog(self.log_for(spec.name), instance.id),
                os.fdopen(log_read, "rb", buffering=0),
            )
        except BaseException:
            os.close(log_write)
            raise
        try:
            try:
                if self.forkserver is not None:
                    forked = await self.forkserver.fork(theirs, log_write)
                    instance.pid = forked.pid
                    if forked.cgroup is not None and self.support is not None:
                        # A zygote already joined this cgroup; it only needs the function's limits.
                        pids = Path(forked.pids) if forked.pids else None
                        instance.cgroup = InstanceCgroup(Path(forked.cgroup), str(self.support.cgroup), pids)
                        instance.cgroup.set_limit(spec.memory_mb)
                        instance.cgroup.set_pids(self._tasks_allowed(spec))
                        instance.cgroup_joined = True
                else:
                    instance.process = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "strato.faas.live.runtime",
                        str(theirs.fileno()),
                        pass_fds=(theirs.fileno(),),
                        start_new_session=True,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log_write,
                        stderr=log_write,
                        env=helper_environment(),
                    )
                    instance.pid = instance.process.pid
            finally:
                theirs.close()
                # The instance holds the only write end now: the pipe ends when the instance does.
                os.close(log_write)
            if instance.cgroup is None and self.support is not None:
                instance.cgroup = InstanceCgroup.create(
                    self.support, instance.id, spec.memory_mb, pids_max=self._tasks_allowed(spec)
                )
            _, channel = await loop.connect_accepted_socket(
                lambda: InstanceChannel(self, instance), sock=ours
            )
            instance.channel = channel
            channel.send(frames.SPEC, self._instance_spec(instance).to_json())
            ready = await asyncio.wait_for(asyncio.shield(channel.ready), START_TIMEOUT_S)
        except InvokeFailed:
            self._stop_instance(instance)
            raise
        except (OSError, TimeoutError, InstanceDied, ConnectionError) as error:
            instance.kill()
            cgroup = instance.cgroup
            self._stop_instance(instance)
            reason = str(error) or type(error).__name__
            if cgroup is not None and cgroup.oom_killed():
                reason = f"killed by its memory limit of {spec.memory_mb:g} MiB while loading"
            raise InvokeFailed(502, f"instance of {spec.name!r} failed to start: {reason}") from None
        if instance.state == "stopping":
            raise InvokeFailed(503, f"instance of {spec.name!r} was stopped while starting")
        instance.port = ready.get("port")
        instance.function_pid = ready.get("function_pid")
        if self.provider_pool is not None and instance.port is not None:
            await self.provider_pool.request(
                "PUT",
                f"/system/instances/{instance.id}",
                {"Content-Type": "application/json", "X-Strato-Hop": self.provider_secret},
                json.dumps({"port": instance.port, "secret": instance.hop_secret}).encode(),
            )
        instance.state = "ready"
        instance.ready_at = self.now()
        instance.idle_since = instance.ready_at
        if reason != "trial":
            self.m_start.observe(instance.ready_at - instance.started_at, spawn=self.config.spawn)
            self.start_samples.append(instance.ready_at - instance.started_at)
        return instance

    def _tasks_allowed(self, spec: FunctionSpec) -> int:
        """pids.max: the function's own allowance plus what the platform runs in the instance (the
        waiter, the instance, its worker threads, the faasd watchdog and function process)."""
        return self.config.pids_limit + spec.concurrency + 8

    def _instance_spec(self, instance: Instance) -> InstanceSpec:
        spec = instance.spec
        root = os.geteuid() == 0
        return InstanceSpec(
            instance_id=instance.id,
            function=spec.name,
            handler=spec.handler,
            code_dir=spec.code_dir,
            backend=self.config.backend,
            env=dict(spec.env),
            concurrency=spec.concurrency,
            cpu_timeout_s=spec.timeout_s,
            memory_mb=spec.memory_mb,
            uid=function_uid(spec.uid_index) if root and spec.uid_index else None,
            network=spec.network,
            sandbox=self.config.sandbox,
            cgroup_procs=tuple(str(path) for path in instance.cgroup.procs_files)
            if instance.cgroup and not instance.cgroup_joined
            else (),
            tmp_size_mb=self.config.tmp_size_mb,
            cgroup_joined=instance.cgroup_joined,
            host_support=self.support.to_json() if self.support else None,
            max_response=self.config.max_response,
            hop_secret=instance.hop_secret,
        )

    def _stop_instance(self, instance: Instance) -> None:
        """Take an instance out of service now; its process exits when its socket closes."""
        if instance.state == "stopping":
            return
        was_counted = instance in instance.function.instances
        if instance.inflight == 0 and instance.idle_since is not None and instance.state == "ready":
            self._account_idle(instance, self.now())
        instance.state = "stopping"
        if was_counted:
            instance.function.instances.remove(instance)
            self.used_mb -= instance.spec.memory_mb
        if self.provider_pool is not None and instance.port is not None:
            asyncio.get_running_loop().create_task(self._unregister(instance.id))
        if instance.channel is not None:
            instance.channel.close()
        if instance.cgroup is not None:
            cgroup = instance.cgroup
            asyncio.get_running_loop().call_later(1.0, cgroup.remove)
        self._retire_old_code(instance.function)

    async def _unregister(self, instance_id: str) -> None:
        if self.provider_pool is not None:
            with contextlib.suppress(ConnectionError):
                await self.provider_pool.request(
                    "DELETE", f"/system/instances/{instance_id}", {"X-Strato-Hop": self.provider_secret}, b""
                )

    def instance_gone(self, instance: Instance) -> None:
        """The instance's socket closed: it exited, crashed or was killed."""
        if instance.state != "stopping":
            function = instance.function
            self._stop_instance(instance)
            if function.waiters and not any(i.state == "starting" for i in function.instances):
                try:
                    self._start_for_waiters(function, "cold")
                except InvokeFailed as failure:
                    _fail_waiters(function, failure)

    def _retire_old_code(self, function: FunctionState) -> None:
        if function.removed:
            # Its directory is gone, and a function deployed again under the name reuses version numbers.
            return
        for old in list(function.retired):
            if not any(instance.spec is old for instance in function.instances):
                function.retired.remove(old)
                FunctionStore(self.config.state_dir).remove_version(old)

    def _account_idle(self, instance: Instance, now: float) -> None:
        assert instance.idle_since is not None
        idle_policy_s = (now - instance.idle_since) * self.config.time_scale
        instance.function.stats.wasted_mb_s += idle_policy_s * instance.spec.memory_mb
        instance.idle_since = None

    # ---- keep-alive ------------------------------------------------------------------------------

    def _cancel_timers(self, function: FunctionState) -> None:
        for timer in function.timers:
            timer.cancel()
        function.timers.clear()

    def _on_idle(self, function: FunctionState) -> None:
        now = self.now()
        function.idle_since = now
        window = self.policy.decide(function.policy_state)
        loop = asyncio.get_running_loop()
        if window.empty or window.prewarm_us > 0:
            self._unload(function, "unload")
            if window.empty:
                return
            function.timers.append(
                loop.call_later(self.real_seconds(window.prewarm_us), self._prewarm, function)
            )
        unload_after = self.real_seconds(window.unload_us)
        if math.isfinite(unload_after):
            function.timers.append(loop.call_later(unload_after, self._expire, function))
        if function.live():
            function.rank = self.policy.eviction_rank(
                function.policy_state,
                clock=self.clock,
                idle_since_us=self.policy_us(now - self.started_at),
                unload_at_us=NEVER
                if window.unload_us >= NEVER
                else self.policy_us(now - self.started_at) + window.unload_us,
            )

    def _prewarm(self, function: FunctionState) -> None:
        if function.inflight or function.live() or self.functions.get(function.spec.name) is not function:
            return
        function.stats.prewarms += 1
        self.m_events.inc(function=function.spec.name, event="prewarm")

        async def warm() -> None:
            try:
                await self.start_instance(function, reason="prewarm")
            except InvokeFailed:
                function.stats.start_failures += 1
                return
            if function.inflight == 0:
                function.rank = self.policy.eviction_rank(
                    function.policy_state,
                    clock=self.clock,
                    idle_since_us=self.policy_us(self.now() - self.started_at),
                    unload_at_us=NEVER,
                )
            self._hand_out(function)

        asyncio.get_running_loop().create_task(warm())

    def _expire(self, function: FunctionState) -> None:
        if function.inflight == 0:
            self._cancel_timers(function)
            self._unload(function, "unload")

    def _unload(self, function: FunctionState, event: str) -> None:
        instances = function.live()
        if not instances:
            return
        for instance in instances:
            self._stop_instance(instance)
        function.rank = None
        function.stats.unloads += event == "unload"
        function.stats.evictions += event == "evict"
        self.m_events.inc(function=function.spec.name, event=event)
        self.policy.on_unload(function.policy_state)

    def _reserve(self, memory_mb: float, *, evict: bool) -> bool:
        budget = self.config.memory_budget_mb
        if self.used_mb + memory_mb > budget and evict:
            candidates = sorted(
                (
                    function
                    for function in self.functions.values()
                    if function.inflight == 0 and function.rank is not None and function.live()
                ),
                key=lambda function: (function.rank, function.spec.name),
            )
            for victim in candidates:
                if self.used_mb + memory_mb <= budget:
                    break
                rank = victim.rank
                self._cancel_timers(victim)
                self._unload(victim, "evict")
                self.clock = float(rank) if rank is not None else self.clock
        if self.used_mb + memory_mb > budget:
            return False
        self.used_mb += memory_mb
        return True

    # ---- reporting -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Per-function counters with the idle memory accounted up to now (policy time)."""
        now = self.now()
        out: dict[str, Any] = {}
        for name, function in sorted(self.functions.items()):
            pending = sum(
                (now - instance.idle_since) * self.config.time_scale * instance.spec.memory_mb
                for instance in function.instances
                if instance.state == "ready" and instance.inflight == 0 and instance.idle_since is not None
            )
            row = dict(function.stats.__dict__)
            row["wasted_mb_s"] = function.stats.wasted_mb_s + pending
            row["instances"] = len(function.live())
            row["memory_mb"] = function.spec.memory_mb
            out[name] = row
        return {
            "policy": self.policy.name,
            "backend": self.config.backend,
            "spawn": self.config.spawn,
            "time_scale": self.config.time_scale,
            "uptime_s": now - self.started_at,
            "memory_used_mb": self.used_mb,
            "instance_starts_s": list(self.start_samples),
            "functions": out,
        }

    def describe(self, name: str) -> dict[str, Any] | None:
        function = self.functions.get(name)
        if function is None:
            return None
        info = function.spec.to_public()
        info["instances"] = [
            {
                "id": instance.id,
                "pid": instance.pid,
                "state": instance.state,
                "inflight": instance.inflight,
                "port": instance.port,
                "version": instance.spec.version,
            }
            for instance in function.instances
        ]
        info["stats"] = self.stats()["functions"][name]
        return info


def spec_json_response(node: Node, name: str) -> Response:
    info = node.describe(name)
    return json_response(200, info) if info else error_response(404, f"no function named {name!r}")
