"""The live node's instances: one running copy of a function, its control channel, and how it is spawned.

Everything read from an instance comes from code the platform does not trust (see
:class:`InstanceChannel`). :class:`Spawner` starts instance processes (through the fork-server, or as a
fresh interpreter), each in its sandbox when the host allows, and waits until the handler is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from strato.faas.live import frames
from strato.faas.live._leanpath import Slot, split_result
from strato.faas.live.clock import Cancellable
from strato.faas.live.completion import Completion
from strato.faas.live.forkserver import ForkServerClient
from strato.faas.live.httpio import (
    AnyResponse,
    BodySink,
    InvalidResponse,
    RawResponse,
    StreamedResponse,
    check_header_block,
    check_status,
    status_line,
)
from strato.faas.live.isolation import HostSupport, InstanceCgroup, function_uid
from strato.faas.live.logs import FunctionLog, InstanceLog
from strato.faas.live.nodestats import FunctionStats
from strato.faas.live.registry import FunctionSpec
from strato.faas.live.runtime import InstanceSpec, helper_environment

if TYPE_CHECKING:
    from strato.faas.live.platform import NodeConfig

InstanceState = Literal["starting", "ready", "stopping"]
StartReason = Literal["cold", "scale-out", "prewarm", "trial"]
"""Why an instance starts: an invocation found its function unloaded, all its instances busy, the policy
pre-warms it, or a deploy proves the code loads (a trial instance holds no memory of the budget)."""
START_TIMEOUT_S = 30.0
ZYGOTES = 2
"""Pre-forked children the fork-server keeps in their own memory cgroups (see forkserver)."""


class InstanceOwner(Protocol):
    """What an instance's channel reports to (the node)."""

    def instance_gone(self, instance: Instance) -> None: ...

    def log_for(self, name: str) -> FunctionLog: ...

    def lane_demote(self, slot: Slot) -> None: ...

    def storage_call(self, instance: Instance, call_id: int, meta: bytes, body: bytes) -> None: ...


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
        self.state: InstanceState = "starting"
        self.reserved_mb = 0.0
        """Memory of the node's budget this instance holds (0 once keep-alive unloaded its function)."""
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
        self.slot: Slot | None = None
        """The gateway's lane's view of it, once the node lent it (lean backend)."""

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

    def __init__(
        self, node: InstanceOwner, instance: Instance, max_response: int, max_storage: int = 0
    ) -> None:
        self.node = node
        self.instance = instance
        self.max_response = max_response
        self.max_storage = max_storage
        """Largest data a storage call (a put) may carry; 0 when the node has no object store."""
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: dict[int, Completion[AnyResponse]] = {}
        self.ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.ids = itertools.count(1)
        self.closed = False
        self.stream: ResultStream | None = None
        self.violation: str | None = None
        self.paused = False
        """Reading is paused: a client takes a streamed body slowly, or has not taken it yet."""
        self.checked_meta: tuple[bytes, tuple[int, bytes] | None] = (b"\x00", None)
        self.last_request_id = 0
        self.slot: Slot | None = None
        """Set by the node when it lends the instance to the gateway's lane."""
        """The last result status and header lines from this instance, and their checked form."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.slot is not None:
            self.slot.reclaim()
        # First, while the instance still counts as live: requests waiting for an instance get a new one
        # started for them (failing the ones in flight below marks it stopped, synchronously).
        self.node.instance_gone(self.instance)
        if self.slot is not None:
            # The lane's invocation in flight joins the pending ones, which fail below.
            self.node.lane_demote(self.slot)
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

    def send(self, kind: int, meta: bytes, body: bytes = b"") -> None:
        assert self.transport is not None
        self.transport.write(frames.encode(0, kind, meta, body))

    def unread_bytes(self) -> int:
        """Bytes written to the instance that it has not read yet (its storage replies, mostly)."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def reply(self, call_id: int, meta: bytes, body: bytes) -> None:
        """Answer a storage call (a large body is written as it is, not joined to its header)."""
        if self.closed or self.transport is None:
            return
        self.transport.write(frames.HEADER.pack(call_id, frames.STORAGE_REPLY, len(meta), len(body)) + meta)
        if body:
            self.transport.write(body)

    def invoke(self, kind: int, head: bytes, body: bytes) -> Completion[AnyResponse]:
        if self.closed or self.transport is None:
            raise InstanceDied(f"instance {self.instance.id} is gone")
        request_id = next(self.ids)
        future: Completion[AnyResponse] = Completion()
        self.pending[request_id] = future
        self.last_request_id = request_id
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
        slot = self.slot
        if slot is not None and slot.busy:
            if not self.buffer and self.stream is None and slot.complete(data):
                return
            self.node.lane_demote(slot)
        if not self.buffer and self.stream is None and len(self.pending) == 1:
            # The common case, one whole result frame in one read, split in C; anything else (a partial,
            # large, early or malformed frame) goes through the general reader below, which says why.
            whole = split_result(
                data, self.last_request_id, frames.MAX_META, min(self.max_response, STREAM_ABOVE)
            )
            if whole is not None:
                self._result(self.last_request_id, whole[0], whole[1])
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
            if kind not in (frames.RESULT, frames.READY, frames.LOAD_FAILED, frames.STORAGE):
                self.misbehave(f"sent a frame of unknown kind {kind}")
                return
            if kind == frames.STORAGE:
                if meta_size > frames.MAX_META or body_size > self.max_storage:
                    self.misbehave(
                        f"sent a storage call of {body_size} bytes with {meta_size} bytes of metadata; the "
                        f"limits are {self.max_storage} and {frames.MAX_META} bytes (--max-object)"
                    )
                    return
            elif meta_size > frames.MAX_META or body_size > self.max_response:
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
            elif kind == frames.STORAGE:
                self.node.storage_call(self.instance, request_id, meta, body)
            elif kind == frames.READY and not self.ready.done():
                try:
                    self.ready.set_result(ready_info(meta))
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
            self._cache_in_slot()
        return checked

    def attach(self, slot: Slot) -> None:
        """The node lent this instance to the gateway's lane as ``slot``."""
        self.slot = slot
        self._cache_in_slot()

    def _cache_in_slot(self) -> None:
        # The lane passes a result through only when its status and header lines are the ones checked
        # here last; a 204 or 304 (no body, no length) always takes the general path.
        meta, checked = self.checked_meta
        if self.slot is not None and checked is not None and checked[0] not in (204, 304):
            self.slot.cache(meta, status_line(checked[0]) + checked[1], checked[0])

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
        if self.slot is not None:
            self.slot.reclaim()  # not one more invocation for it, while its socket closes
        self.violation = f"the instance of {self.instance.spec.name!r} {what}; it was killed"
        self.node.log_for(self.instance.spec.name).event(self.instance.id, self.violation)
        self.buffer.clear()
        self.instance.kill()
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def fail_waiters(function: FunctionState, failure: InvokeFailed) -> None:
    while function.waiters:
        waiter = function.waiters.popleft()
        if not waiter.done():
            waiter.set_exception(failure)


def namespace_pid(pid: int) -> int | None:
    """The pid of host process ``pid`` inside its own (innermost) pid namespace."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def ready_info(meta: bytes) -> dict[str, Any]:
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
class FunctionState:
    """A deployed function on the node: its instances and the requests waiting for one."""

    spec: FunctionSpec
    app: int
    """Its index in the node's keep-alive core (first deployment order: the eviction tie-break)."""
    instances: list[Instance] = field(default_factory=list)
    inflight: int = 0
    waiters: deque[asyncio.Future[Instance]] = field(default_factory=deque)
    timers: list[Cancellable] = field(default_factory=list)
    cold_reservation_mb: float = 0.0
    """Memory the core reserved for a cold start, handed to the instance that starts for it."""
    stats: FunctionStats = field(default_factory=FunctionStats)
    retired: list[FunctionSpec] = field(default_factory=list)
    removed: bool = False
    last_released: Instance | None = None

    def live(self) -> list[Instance]:
        return [instance for instance in self.instances if instance.state != "stopping"]


class Spawner:
    """Starts instance processes: forked from the fork-server's template (``spawn="fork"``) or as a fresh
    interpreter, joined to their own cgroups when the host has them."""

    def __init__(self, owner: InstanceOwner, config: NodeConfig, support: HostSupport | None) -> None:
        self.owner = owner
        self.config = config
        self.support = support
        self.forkserver: ForkServerClient | None = None

    async def start(self) -> None:
        if self.config.spawn == "fork":
            zygotes = ZYGOTES if self.support is not None and self.support.cgroup else 0
            self.forkserver = await ForkServerClient.start(self.support, zygotes=zygotes)

    async def stop(self) -> None:
        if self.forkserver is not None:
            await self.forkserver.stop()

    async def spawn(self, instance: Instance) -> dict[str, Any]:
        """Spawn ``instance`` and wait until its handler is loaded; its READY information."""
        spec = instance.spec
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_read, log_write = os.pipe2(os.O_CLOEXEC)
        try:
            await loop.connect_read_pipe(
                lambda: InstanceLog(self.owner.log_for(spec.name), instance.id),
                os.fdopen(log_read, "rb", buffering=0),
            )
        except BaseException:
            os.close(log_write)
            raise
        try:
            if self.forkserver is not None:
                forked = await self.forkserver.fork(theirs, log_write)
                instance.pid = forked.pid
                if forked.cgroup is not None and self.support is not None:
                    # A zygote already joined this cgroup; it only needs the function's limits.
                    pids = Path(forked.pids) if forked.pids else None
                    instance.cgroup = InstanceCgroup(Path(forked.cgroup), str(self.support.cgroup), pids)
                    instance.cgroup.set_limit(spec.memory_mb)
                    instance.cgroup.set_pids(self.tasks_allowed(spec))
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
                self.support, instance.id, spec.memory_mb, pids_max=self.tasks_allowed(spec)
            )
        max_response = self.config.max_response
        max_storage = self.config.storage.max_object if self.config.storage is not None else 0
        _, channel = await loop.connect_accepted_socket(
            lambda: InstanceChannel(self.owner, instance, max_response, max_storage), sock=ours
        )
        instance.channel = channel
        channel.send(frames.SPEC, self.instance_spec(instance).to_json())
        return await asyncio.wait_for(asyncio.shield(channel.ready), START_TIMEOUT_S)

    def tasks_allowed(self, spec: FunctionSpec) -> int:
        """pids.max: the function's own allowance plus what the platform runs in the instance (the
        waiter, the instance, its worker threads, the faasd watchdog and function process)."""
        return self.config.pids_limit + spec.concurrency + 8

    def instance_spec(self, instance: Instance) -> InstanceSpec:
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


def kill_strays(instance: Instance) -> int:
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
        if pid == instance.pid or namespace_pid(pid) in keep:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed
