"""The live platform's node: functions, their instances, and keep-alive through the shared core.

The node drives the same :class:`~strato.faas.keepalive_core.KeepAliveCore` as the event simulator, with
event-loop timers instead of kernel timers: it reports arrivals, the end of each invocation and its timers
in *policy time* (real time x ``time_scale``, from an injectable :class:`~strato.faas.live.clock.PolicyClock`)
and carries out what the core answers by starting and stopping real instances. The unit of decision is the
function (the paper's application): with ``time_scale = 60`` a policy's 10-minute window lasts 10 real
seconds, so a replay is the trace in miniature.

A function can run several instances (scale-out). To the core it is *loaded* while any instance lives
(starting ones included) and *busy* while any invocation of it runs; every instance holds its own memory
of the one budget, reserved through the core when it starts (the first by the cold arrival, further ones
as scale-out, evicting idle functions exactly as a cold start does) and given back when it stops. An
invocation whose cold start cannot get memory is rejected with 503; so is a scale-out that cannot (the
invocation was admitted warm; it counts as an error, not as a rejection). Wasted memory is the memory
held while the function as a whole is idle: an idle instance beside a busy one is not waste.

Everything that changes an instance's state runs on the event loop thread, so "pick a warm instance" and
"unload an idle instance" can never interleave: an invocation that arrives while its function is being
unloaded finds no instance and starts a new one instead of racing the one going away (no 502).

The parts live beside this module: ``instances`` (an instance, its channel, spawning), ``dispatch`` (the
lean and faasd backends), ``nodestats`` (reports and Prometheus metrics), ``clock`` (policy time).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from strato.errors import ConfigError
from strato.faas.keepalive_core import IdleDecision, KeepAliveCore, Phase, Timer
from strato.faas.live._leanpath import Route, Slot
from strato.faas.live.clock import PolicyClock, ScaledClock
from strato.faas.live.completion import Completion
from strato.faas.live.dispatch import (
    INTERNAL_HEADER_PREFIX,
    Backend,
    FaasdBackend,
    Invocation,
    LeanBackend,
    Sent,
)
from strato.faas.live.httpio import (
    DEFAULT_MAX_RESPONSE,
    AnyResponse,
    LaneClient,
    RawResponse,
    Response,
    StreamedResponse,
    error_response,
    json_response,
)
from strato.faas.live.instances import (
    STREAM_ABOVE,
    FunctionState,
    Instance,
    InstanceDied,
    InstanceMisbehaved,
    InvokeFailed,
    ResultStream,
    Spawner,
    StartReason,
    fail_waiters,
    kill_strays,
)
from strato.faas.live.isolation import (
    HostSupport,
    SandboxError,
    cleanup_cgroup_base,
    probe_host,
    reap_stale_cgroup_bases,
)
from strato.faas.live.logs import FunctionLog
from strato.faas.live.nodestats import FunctionReport, NodeMetrics
from strato.faas.live.registry import FunctionSpec, FunctionStore
from strato.faas.live.runtime import FATAL_HEADER
from strato.faas.live.storage_broker import StorageBroker, StorageConfig
from strato.faas.policies import parse_policy
from strato.faas.policies.base import KeepAlivePolicy

BackendName = Literal["lean", "faasd"]
SpawnMode = Literal["fork", "fresh"]
KeepAliveEvent = Literal["unload", "prewarm", "evict"]
BACKENDS: tuple[BackendName, ...] = ("lean", "faasd")
SPAWN_MODES: tuple[SpawnMode, ...] = ("fork", "fresh")
SWEEP_INTERVAL_S = 1.0
LANE_WATCH_S = 0.05
"""How often the lane's invocations in flight are checked against their timeouts."""
LOG_RATE = 1024 * 1024
"""Bytes a second an instance may write to its log before its writes block (logs.InstanceLog)."""


def backend_name(value: str) -> BackendName:
    """``value`` as a backend name, or a ConfigError listing the backends."""
    for name in BACKENDS:
        if value == name:
            return name
    raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {value!r}")


def spawn_mode(value: str) -> SpawnMode:
    """``value`` as a spawn mode, or a ConfigError listing the modes."""
    for mode in SPAWN_MODES:
        if value == mode:
            return mode
    raise ConfigError(f"spawn must be one of {', '.join(SPAWN_MODES)}, not {value!r}")


@dataclass(frozen=True)
class NodeConfig:
    state_dir: Path
    backend: BackendName = "lean"
    spawn: SpawnMode = "fork"
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
    storage: StorageConfig | None = None
    """The object store handlers reach through ``context.storage``, and the cache in front of it."""

    def __post_init__(self) -> None:
        backend_name(self.backend)
        spawn_mode(self.spawn)
        if not self.time_scale > 0:
            raise ConfigError("time scale must be positive")
        if not self.memory_budget_mb > 0:
            raise ConfigError("memory budget must be positive")
        if self.max_response <= 0 or self.pids_limit <= 0 or self.log_limit <= 0:
            raise ConfigError("the response, pids and log limits must be positive")


class Node:
    """Functions, their instances, keep-alive and the memory budget of one machine.

    ``clock`` and ``backend`` default to real time and the configured backend; tests pass a fake clock
    and a backend that starts no processes."""

    def __init__(
        self,
        config: NodeConfig,
        policy: KeepAlivePolicy | None = None,
        *,
        clock: PolicyClock | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.config = config
        self.policy = policy or parse_policy(config.policy)
        budget = config.memory_budget_mb
        self.core = KeepAliveCore(self.policy, budget if math.isfinite(budget) else None)
        self.policy_clock = clock or ScaledClock(config.time_scale)
        self.functions: dict[str, FunctionState] = {}
        self.lane_routes: dict[str, Route] = {}
        """The functions the gateway's lane may serve (lean backend, one invocation per instance)."""
        self.by_app: list[FunctionState] = []
        """Functions by their core index (removed ones stay, forgotten by the core)."""
        self.logs: dict[str, FunctionLog] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.ids = itertools.count(1)
        self.support: HostSupport | None = probe_host() if config.sandbox and backend is None else None
        if backend is None:
            spawner = Spawner(self, config, self.support)
            backend = (
                LeanBackend(spawner)
                if config.backend == "lean"
                else FaasdBackend(spawner, config.max_response, secrets.token_urlsafe(32))
            )
        self.backend = backend
        self.started_at = 0.0
        self.start_samples: deque[float] = deque(maxlen=10_000)
        """Recent instance start times (spawn to handler loaded), for benchmarks."""
        self.prometheus = NodeMetrics(self._instance_gauge, lambda: self.used_mb, budget)
        self.metrics = self.prometheus.registry
        self._lane_watch: asyncio.TimerHandle | None = None
        self.storage: StorageBroker | None = None
        self._booting: set[asyncio.Task[None]] = set()
        """Instances starting ahead of demand (held: the loop keeps only weak references to tasks)."""
        self.lane_answered = 0
        """Invocations the gateway's lane answered (plain warm invocations on the lean backend)."""
        self.lane_demoted = 0
        """Invocations the lane took and handed to the general path (see lane_demote)."""
        self.metrics.gauge(
            "strato_faas_lane_invocations_total",
            "Invocations taken by the gateway's C lane, by outcome",
            lambda: [
                ((("outcome", "answered"),), float(self.lane_answered)),
                ((("outcome", "demoted"),), float(self.lane_demoted)),
            ],
            kind="counter",
        )

    @property
    def used_mb(self) -> float:
        return self.core.budget.used_mb

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
        await self.backend.start()
        if self.config.storage is not None:
            self.storage = await self._open_storage(self.config.storage)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweep)

    async def _open_storage(self, config: StorageConfig) -> StorageBroker:
        from strato.storage import open_store

        store = open_store(config.url, timeout_s=config.store_timeout_s)
        broker = StorageBroker(
            config,
            store,
            self.config.state_dir / "cache-history",
            grow=self.cache_scale_out,
            max_instances=lambda name: (
                self.functions[name].spec.max_instances if name in self.functions else 1
            ),
        )
        self._cache_metrics(broker)
        return broker

    def _cache_metrics(self, broker: StorageBroker) -> None:
        counters = (
            ("hits", "Reads served from the application's cache"),
            ("misses", "Reads the cache sent to the object store"),
            ("validations", "Cached objects validated against the store (conditional GET)"),
            ("stale_validations", "Validations that found the object changed behind the cache"),
            ("bytes_from_cache", "Bytes read from the cache"),
            ("bytes_from_store", "Bytes read from the object store for reads"),
            ("prewarm_inserts", "Objects loaded by the pre-warm on reload"),
            ("prewarm_hits", "Reads served by an object the pre-warm loaded"),
            ("evictions", "Objects evicted to make room"),
            ("unload_dropped_bytes", "Cached bytes dropped when instances unloaded"),
        )
        for field_name, help_text in counters:
            self.metrics.gauge(
                f"strato_faas_cache_{field_name}_total",
                help_text,
                functools.partial(self._cache_rows, broker, field_name),
                kind="counter",
            )
        self.metrics.gauge(
            "strato_faas_cache_used_bytes",
            "Bytes held by the application's cache",
            functools.partial(self._cache_rows, broker, "used_bytes"),
        )

    @staticmethod
    def _cache_rows(
        broker: StorageBroker, field_name: str
    ) -> list[tuple[tuple[tuple[str, str], ...], float]]:
        return [
            ((("function", name),), float(getattr(stats, field_name)))
            for name, stats in sorted(broker.app_stats().items())
        ]

    def storage_call(self, instance: Instance, call_id: int, meta: bytes, body: bytes) -> None:
        if self.storage is None:
            if instance.channel is not None:
                instance.channel.reply(
                    call_id,
                    b'{"status":"error","error":"unavailable","message":"this server has no object store '
                    b'(start it with --storage s3://HOST:PORT)"}',
                    b"",
                )
            return
        self.storage.call(instance, call_id, meta, body)

    def cache_scale_out(self, name: str, count: int) -> int:
        """Start up to ``count`` more instances of ``name`` for its cache (working set or bandwidth), within
        its instance limit and the node's memory budget; returns how many started."""
        function = self.functions.get(name)
        if function is None or function.removed:
            return 0
        started = 0
        for _ in range(count):
            if len(function.live()) >= function.spec.max_instances:
                break
            try:
                instance = self._new_instance(function, reason="scale-out")
            except InvokeFailed:
                break
            started += 1
            self._boot_ahead(instance, "scale-out")
        return started

    def _boot_ahead(self, instance: Instance, reason: StartReason) -> None:
        """Start an instance nobody waits for yet (a pre-warm, a cache scale-out); whoever is waiting
        when it is ready gets it."""
        function = instance.function

        async def boot() -> None:
            try:
                await self._boot(instance, reason)
            except InvokeFailed:
                function.stats.start_failures += 1
                return
            self._hand_out(function)

        task = asyncio.get_running_loop().create_task(boot())
        self._booting.add(task)
        task.add_done_callback(self._booting.discard)

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
                    killed = kill_strays(instance)
                    if killed:
                        self.log_for(function.spec.name).event(
                            instance.id,
                            f"killed {killed} process(es) still running after the invocations ended",
                        )
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweep)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._lane_watch is not None:
            self._lane_watch.cancel()
        for function in self.functions.values():
            self._cancel_timers(function)
            for instance in list(function.instances):
                self._stop_instance(instance)
        await self.backend.stop()
        if self.storage is not None:
            await self.storage.close()
        await asyncio.sleep(0.05)
        for function in self.functions.values():
            for instance in function.instances:
                if instance.cgroup is not None:
                    instance.cgroup.remove()
        if self.support is not None:
            cleanup_cgroup_base(self.support)

    def now(self) -> float:
        """Real time, for latencies and timeouts (keep-alive runs on ``policy_clock``)."""
        # Not loop.time(): uvloop's clock counts whole milliseconds, too coarse for cold starts.
        return time.perf_counter()

    # ---- functions -------------------------------------------------------------------------------

    def install(self, spec: FunctionSpec) -> None:
        """Make ``spec`` the active version; instances of an older version retire as they go idle."""
        current = self.functions.get(spec.name)
        self._lane_route(spec)
        if current is None:
            function = FunctionState(spec, self.core.register(spec.memory_mb))
            self.by_app.append(function)
            self.functions[spec.name] = function
            return
        current.retired.append(current.spec)
        current.spec = spec
        self.core.set_memory(current.app, spec.memory_mb)
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
        self.lane_routes.pop(name, None)
        if self.storage is not None:
            self.storage.forget(name)
        if function is not None:
            self.core.forget(function.app, self.policy_clock.now_us())
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

    def unload(self, name: str) -> int | None:
        """Stop the function's idle instances now (an operator's unload; its cache goes with them), so
        the next invocation starts it again. Returns how many stopped, None for an unknown function."""
        function = self.functions.get(name)
        if function is None:
            return None
        self._cancel_timers(function)
        idle = [instance for instance in function.live() if instance.inflight == 0]
        for instance in idle:
            self._stop_instance(instance)
        if idle:
            self.prometheus.events.inc(function=name, event="unload")
        return len(idle)

    # ---- invocation ------------------------------------------------------------------------------

    def invoke(
        self,
        name: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        forward: bytes | None = None,
    ) -> AnyResponse | Completion[AnyResponse] | asyncio.Future[AnyResponse]:
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
        refused = self._admit(function, started)
        if refused is not None:
            return refused
        request = (method, target, headers, body, forward)
        instance = self._warm_instance(function)
        if instance is not None:
            self._occupy(instance)
            return self._dispatch(function, instance, started, request)
        return asyncio.ensure_future(self._invoke_after_start(function, started, request))

    def _admit(self, function: FunctionState, started: float) -> Response | None:
        """An arrival's bookkeeping, the same for every path: keep-alive, eviction, counters. A response
        when the node turns it away (the memory budget is full)."""
        name = function.spec.name
        admission = self.core.arrive(function.app, self.policy_clock.now_us())
        if admission.outcome == "rejected":
            response = error_response(
                503,
                f"node memory budget of {self.config.memory_budget_mb:g} MiB is full; "
                f"{name!r} needs {self.core.apps[function.app].memory_mb:g} MiB",
                function=name,
            )
            self.prometheus.answered(name, response.status, self.now() - started)
            return response
        self._evicted(admission.evicted)
        if function.inflight == 0:
            self._cancel_timers(function)
        if admission.outcome == "cold":
            function.cold_reservation_mb = self.core.apps[function.app].memory_mb
            self.prometheus.cold.inc(function=name)
        function.inflight += 1
        if function.inflight >= function.spec.max_concurrency:
            for instance in function.instances:  # at the limit: the general path answers 429
                if instance.slot is not None:
                    instance.slot.reclaim()
        return None

    # ---- the lane (docs/live.md, "The lean path") -------------------------------------------------
    # The gateway's C lane (strato.faas.live._leanpath) takes plain warm invocations of functions with
    # one invocation per instance straight from the client's bytes to an idle instance this node lent it,
    # and the result straight back. The node keeps every decision: it lends an instance only while the
    # general path would give it the next invocation, the lane reports each dispatch (`_lane_dispatched`)
    # and each end (`lane_finish`), both on the loop thread, for the same bookkeeping as the general
    # path; whatever the lane cannot pass through as it is (a result it has not seen checked, a partial
    # or large frame, the instance's death, a timeout) is handed back to the general path by
    # `lane_demote`.

    def _lane_route(self, spec: FunctionSpec) -> None:
        if self.config.backend != "lean" or spec.concurrency != 1:
            self.lane_routes.pop(spec.name, None)
        elif spec.name not in self.lane_routes:
            self.lane_routes[spec.name] = Route(spec.name, self._lane_dispatched)

    def _lend(self, instance: Instance) -> None:
        """Offer an idle, ready instance of the function's current code to the lane."""
        channel = instance.channel
        route = self.lane_routes.get(instance.spec.name)
        function = instance.function
        if (
            route is None
            or channel is None
            or channel.closed
            or channel.transport is None
            or function.inflight >= function.spec.max_concurrency
        ):
            return
        slot = instance.slot
        if slot is None:
            sock = channel.transport.get_extra_info("socket")
            slot = instance.slot = Slot(
                route,
                instance,
                channel.transport,
                min(channel.max_response, STREAM_ABOVE),
                sock.fileno() if sock is not None else -1,
                channel,
            )
            channel.attach(slot)
        slot.lend()

    def _lane_dispatched(self, slot: Slot) -> None:
        """The lane sent an invocation to ``slot``'s instance: its arrival, as the general path notes it.

        The lane only uses instances lent to it, and the node lends an instance only while the general
        path would give it the next invocation (ready, idle, the current code, nobody waiting, the
        function under its concurrency limit, its memory held) and takes it back the moment that stops
        being true (_occupy, _stop_instance, the concurrency limit in _admit): so this never refuses."""
        instance: Instance = slot.instance
        function = instance.function
        if self._admit(function, slot.started) is not None:
            raise AssertionError(f"the node refused a lane invocation of {function.spec.name!r}")
        self._occupy(instance)
        if self._lane_watch is None:
            self._lane_watch = asyncio.get_running_loop().call_later(LANE_WATCH_S, self._watch_lane)

    def _watch_lane(self) -> None:
        """Time out the lane's invocations (one timer for all of them instead of one per invocation: a
        timer is a few microseconds on the path the lane exists to shorten); runs while any is in flight."""
        self._lane_watch = None
        now = self.now()
        busy = False
        for function in self.functions.values():
            for instance in function.instances:
                slot = instance.slot
                if slot is not None and slot.busy:
                    if now - slot.started >= instance.spec.timeout_s:
                        self.lane_demote(slot)  # its remaining time is up: the general path's 504
                    else:
                        busy = True
        if busy:
            self._lane_watch = asyncio.get_running_loop().call_later(LANE_WATCH_S, self._watch_lane)

    def lane_finish(self, slot: Slot, status: int, client: LaneClient, keep_alive: bool) -> None:
        """The lane answered ``client`` from ``slot``'s instance."""
        self.lane_answered += 1
        instance: Instance = slot.instance
        try:
            self._account_end(instance.function, instance, slot.started, status)
        finally:
            client.lane_done(keep_alive)  # the client got its answer: its connection goes on regardless

    def lane_demote(self, slot: Slot) -> None:
        """Hand the lane's invocation in flight on ``slot`` to the general path (its timeout included)."""
        taken = slot.demote()
        if taken is None:
            return
        request_id, client, keep_alive, method, started = taken
        self.lane_demoted += 1
        instance: Instance = slot.instance
        channel = instance.channel
        assert channel is not None
        sent: Completion[AnyResponse] = Completion()
        if channel.closed:
            sent.set_exception(InstanceDied(f"instance {instance.id} exited"))
        else:
            channel.pending[request_id] = sent
        remaining = started + instance.spec.timeout_s - self.now()
        client.lane_demoted(
            method, keep_alive, self._track(instance.function, instance, started, sent, remaining)
        )

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
    ) -> Completion[AnyResponse]:
        """Send to ``instance``; the returned completion resolves once the bookkeeping is done."""
        sent: Sent
        try:
            sent = self.backend.send(instance, request)
        except InstanceDied:
            sent = Completion()
            sent.set_exception(InstanceDied(f"instance {instance.id} is gone"))
        return self._track(function, instance, started, sent, instance.spec.timeout_s)

    def _track(
        self, function: FunctionState, instance: Instance, started: float, sent: Sent, timeout_s: float
    ) -> Completion[AnyResponse]:
        """Time the invocation out after ``timeout_s``; the returned completion resolves with its response
        once the bookkeeping is done."""
        loop = asyncio.get_running_loop()
        outcome: Completion[AnyResponse] = Completion()
        timed_out: list[bool] = []

        def on_timeout() -> None:
            timed_out.append(True)
            if not sent.done():
                sent.cancel()

        timer = loop.call_later(max(timeout_s, 0.0), on_timeout)

        def on_sent(done: Sent) -> None:
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

    def _response_from(self, instance: Instance, done: Sent, *, timed_out: bool) -> AnyResponse:
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
        self._account_end(function, instance, started, response.status)
        return response

    def _account_end(
        self, function: FunctionState, instance: Instance | None, started: float, status: int
    ) -> None:
        function.inflight -= 1
        if function.inflight == function.spec.max_concurrency - 1 and not function.waiters:
            for idle in function.instances:  # below the limit again: what is idle goes back to the lane
                if (
                    idle is not instance
                    and idle.state == "ready"
                    and not idle.inflight
                    and idle.spec is function.spec
                ):
                    self._lend(idle)
        if instance is not None:
            self._release(instance)
        decision = self.core.end(function.app, self.policy_clock.now_us())
        if decision is not None:
            self._on_idle(function, decision)
        self.prometheus.answered(function.spec.name, status, self.now() - started)

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
            reason: StartReason = "scale-out" if function.live() else "cold"
            try:
                self._start_for_waiters(function, reason)
            except InvokeFailed:
                function.waiters.remove(waiter)
                raise
        return await waiter

    def _occupy(self, instance: Instance) -> None:
        instance.idle_since = None
        instance.inflight += 1
        if instance.slot is not None:
            instance.slot.reclaim()

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
        elif instance.inflight == 0:
            self._lend(instance)

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

    def _start_for_waiters(self, function: FunctionState, reason: StartReason) -> None:
        instance = self._new_instance(function, reason=reason)
        asyncio.get_running_loop().create_task(self._boot_for_waiters(instance, reason))

    async def _boot_for_waiters(self, instance: Instance, reason: StartReason) -> None:
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
                fail_waiters(function, failure)
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
            fail_waiters(function, failure)

    # ---- instances -------------------------------------------------------------------------------

    async def trial_load(self, spec: FunctionSpec) -> None:
        """Start one instance of ``spec`` in its sandbox, which proves the code imports, then stop it.

        Raises InvokeFailed naming the problem (the import error, or an OOM kill while loading)."""
        trial = self._new_instance(FunctionState(spec, -1), reason="trial", spec=spec)
        self._stop_instance(await self._boot(trial, "trial"))

    def _new_instance(
        self,
        function: FunctionState,
        *,
        reason: StartReason,
        spec: FunctionSpec | None = None,
        reserved: float | None = None,
    ) -> Instance:
        """Reserve memory and count a starting instance, synchronously, so that every request deciding
        whether to start another one sees it. A pre-warm passes what the core reserved when its timer
        fired, a cold start uses what it reserved at the arrival; any other start asks the core now."""
        spec = spec or function.spec
        if reserved is None and reason == "cold" and function.cold_reservation_mb:
            reserved, function.cold_reservation_mb = function.cold_reservation_mb, 0.0
        elif reserved is None and reason != "trial":
            admission = self.core.add_instance(function.app, spec.memory_mb, self.policy_clock.now_us())
            if admission.outcome == "rejected":
                raise InvokeFailed(
                    503,
                    f"node memory budget of {self.config.memory_budget_mb:g} MiB is full; "
                    f"{spec.name!r} needs {spec.memory_mb:g} MiB",
                )
            self._evicted(admission.evicted)
            reserved = spec.memory_mb
        instance = Instance(function, f"{spec.name[:40]}-{next(self.ids)}")
        instance.spec = spec
        instance.reserved_mb = reserved or 0.0
        if reason != "trial":
            function.instances.append(instance)
            if reason == "scale-out":
                function.stats.scale_outs += 1
            if self.storage is not None:
                self.storage.instance_created(instance)
        return instance

    async def _boot(self, instance: Instance, reason: StartReason) -> Instance:
        spec = instance.spec
        instance.started_at = self.now()
        try:
            await self.backend.boot(instance)
        except InvokeFailed:
            self._stop_instance(instance)
            raise
        except (OSError, TimeoutError, InstanceDied, ConnectionError) as error:
            instance.kill()
            cgroup = instance.cgroup
            self._stop_instance(instance)
            problem = str(error) or type(error).__name__
            if cgroup is not None and cgroup.oom_killed():
                problem = f"killed by its memory limit of {spec.memory_mb:g} MiB while loading"
            raise InvokeFailed(502, f"instance of {spec.name!r} failed to start: {problem}") from None
        if instance.state == "stopping":
            raise InvokeFailed(503, f"instance of {spec.name!r} was stopped while starting")
        instance.state = "ready"
        instance.ready_at = self.now()
        instance.idle_since = instance.ready_at
        if reason != "trial":
            self.prometheus.start.observe(instance.ready_at - instance.started_at, spawn=self.config.spawn)
            self.start_samples.append(instance.ready_at - instance.started_at)
        return instance

    def _stop_instance(self, instance: Instance) -> None:
        """Take an instance out of service now; its process exits when its socket closes."""
        if instance.state == "stopping":
            return
        function = instance.function
        instance.state = "stopping"
        if instance.slot is not None:
            instance.slot.reclaim()
        if instance in function.instances:
            function.instances.remove(instance)
            if instance.reserved_mb:
                self.core.release(function.app, instance.reserved_mb, self.policy_clock.now_us())
                instance.reserved_mb = 0.0
        self.backend.stopped(instance)
        if self.storage is not None:
            self.storage.instance_stopped(instance)
        if instance.channel is not None:
            instance.channel.close()
        if instance.cgroup is not None:
            cgroup = instance.cgroup
            asyncio.get_running_loop().call_later(1.0, cgroup.remove)
        self._retire_old_code(instance.function)

    def instance_gone(self, instance: Instance) -> None:
        """The instance's socket closed: it exited, crashed or was killed."""
        if instance.state != "stopping":
            function = instance.function
            self._stop_instance(instance)
            if function.waiters and not any(i.state == "starting" for i in function.instances):
                try:
                    self._start_for_waiters(function, "cold")
                except InvokeFailed as failure:
                    fail_waiters(function, failure)

    def _retire_old_code(self, function: FunctionState) -> None:
        if function.removed:
            # Its directory is gone, and a function deployed again under the name reuses version numbers.
            return
        for old in list(function.retired):
            if not any(instance.spec is old for instance in function.instances):
                function.retired.remove(old)
                FunctionStore(self.config.state_dir).remove_version(old)

    # ---- keep-alive ------------------------------------------------------------------------------

    def _cancel_timers(self, function: FunctionState) -> None:
        for timer in function.timers:
            timer.cancel()
        function.timers.clear()

    def _on_idle(self, function: FunctionState, decision: IdleDecision) -> None:
        if decision.unload_now:
            self._drop(function, "unload")
        for timer in decision.timers:
            function.timers.append(
                self.policy_clock.call_at(
                    timer.at_us, timer.phase, function.app, functools.partial(self._fire, function, timer)
                )
            )

    def _fire(self, function: FunctionState, timer: Timer) -> None:
        if not self.core.fire(function.app, timer, self.policy_clock.now_us()):
            return
        if timer.phase == Phase.UNLOAD:
            self._drop(function, "unload")
            return
        self.prometheus.events.inc(function=function.spec.name, event="prewarm")
        # Counted as starting at once, so that an invocation arriving meanwhile waits for it.
        instance = self._new_instance(
            function, reason="prewarm", reserved=self.core.apps[function.app].memory_mb
        )
        self._boot_ahead(instance, "prewarm")

    def _evicted(self, apps: tuple[int, ...]) -> None:
        for app in apps:
            victim = self.by_app[app]
            self._cancel_timers(victim)
            self._drop(victim, "evict")

    def _drop(self, function: FunctionState, event: KeepAliveEvent) -> None:
        """Stop the instances of a function the core has unloaded (its memory is already free)."""
        for instance in function.live():
            instance.reserved_mb = 0.0
            self._stop_instance(instance)
        function.cold_reservation_mb = 0.0
        self.prometheus.events.inc(function=function.spec.name, event=event)

    # ---- reporting -------------------------------------------------------------------------------

    def report(self, name: str) -> FunctionReport:
        """One function's counters, its wasted memory accounted up to now (policy time)."""
        function = self.functions[name]
        counters = self.core.counters(function.app, self.policy_clock.now_us())
        return FunctionReport(
            invocations=counters.invocations,
            cold_starts=counters.cold_starts,
            rejections=counters.rejections,
            scale_outs=function.stats.scale_outs,
            prewarms=counters.prewarms,
            unloads=counters.unloads,
            evictions=counters.evictions,
            errors=function.stats.errors,
            start_failures=function.stats.start_failures,
            wasted_mb_s=counters.wasted_mb_us / 1e6,
            instances=len(function.live()),
            memory_mb=function.spec.memory_mb,
        )

    def stats(self) -> dict[str, Any]:
        """Per-function counters (``/system/stats``)."""
        return {
            "policy": self.policy.name,
            "backend": self.config.backend,
            "spawn": self.config.spawn,
            "time_scale": self.config.time_scale,
            "uptime_s": self.now() - self.started_at,
            "memory_used_mb": self.used_mb,
            "instance_starts_s": list(self.start_samples),
            "lane": {"answered": self.lane_answered, "demoted": self.lane_demoted},
            "storage": self.storage.stats() if self.storage is not None else None,
            "functions": {name: self.report(name).to_json() for name in sorted(self.functions)},
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
        info["stats"] = self.report(name).to_json()
        return info


def spec_json_response(node: Node, name: str) -> Response:
    info = node.describe(name)
    return json_response(200, info) if info else error_response(404, f"no function named {name!r}")
