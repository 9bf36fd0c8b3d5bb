"""The event simulator and the live node drive one keep-alive core: same invocations, same results.

The live node runs here on a fake policy clock and a backend that starts no process (an instance is ready
at once, an invocation ends when the clock reaches its arrival plus its duration), so every keep-alive
decision goes through the node's own code: admission, reservations, eviction of real instance records,
event-loop timers, pre-warm starts. The simulator's kernel and the fake clock order simultaneous events
alike (unload, pre-warm, arrival, end; then app), so the results must be identical, not close.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faas_helpers import MIN, H, S, make_invocations
from strato.faas.keepalive_core import Phase
from strato.faas.live.completion import Completion
from strato.faas.live.dispatch import Invocation
from strato.faas.live.httpio import RawResponse
from strato.faas.live.instances import Instance
from strato.faas.live.platform import Node, NodeConfig
from strato.faas.live.registry import FunctionSpec
from strato.faas.policies import parse_policy
from strato.faas.results import PolicyResult
from strato.faas.simulator import EventSimulator
from strato.traces.faas.model import Invocations

SETTLE_STEPS = 50
"""Loop iterations run after each clock event; a cold start needs about six (task, boot, hand-out)."""


class _Handle:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Policy time that moves only when the test says, firing timers in (time, phase, app) order."""

    def __init__(self) -> None:
        self.now = 0
        self._queue: list[tuple[int, int, int, int, _Handle]] = []
        self._sequence = 0

    def now_us(self) -> int:
        return self.now

    def call_at(self, when_us: int, phase: Phase, app: int, callback: Callable[[], None]) -> _Handle:
        assert when_us >= self.now, "a timer in the past"
        handle = _Handle(callback)
        heapq.heappush(self._queue, (when_us, int(phase), app, self._sequence, handle))
        self._sequence += 1
        return handle

    async def run(self, until: int) -> None:
        while self._queue and self._queue[0][0] <= until:
            when, _, _, _, handle = heapq.heappop(self._queue)
            if handle.cancelled:
                continue
            self.now = when
            handle.callback()
            for _ in range(SETTLE_STEPS):
                await asyncio.sleep(0)
        self.now = until


class InstantBackend:
    """Instances without processes: ready at once; the request body is the invocation's duration in µs."""

    def __init__(self, clock: FakeClock, apps: dict[str, int]) -> None:
        self.clock = clock
        self.apps = apps

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def boot(self, instance: Instance) -> None:
        return None

    def send(self, instance: Instance, request: Invocation) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        duration = int(request[3])
        self.clock.call_at(
            self.clock.now + duration,
            Phase.END,
            self.apps[instance.spec.name],
            lambda: done.set_result(RawResponse(200, b"", b"")),
        )
        return done

    def stopped(self, instance: Instance) -> None:
        return None


def run_live(
    invocations: Invocations,
    memory: np.ndarray,
    spec: str,
    capacity: float | None,
    state_dir: Path,
    *,
    concurrency: int = 10**6,
) -> tuple[PolicyResult, Node, list[int]]:
    """The invocations on a fake-clock node; with the default ``concurrency`` one instance per function
    takes them all (no scale-out), as the simulator's one load per app."""
    clock = FakeClock()
    names = {f"app-{app}": app for app in range(invocations.n_apps)}
    statuses: list[int] = []

    async def main() -> Node:
        node = Node(
            NodeConfig(
                state_dir=state_dir,
                sandbox=False,
                memory_budget_mb=math.inf if capacity is None else capacity,
            ),
            parse_policy(spec),
            clock=clock,
            backend=InstantBackend(clock, names),
        )
        for name, app in names.items():
            node.install(
                FunctionSpec(
                    name=name,
                    memory_mb=float(memory[app]),
                    concurrency=concurrency,
                    max_concurrency=10**6,
                    version=1,
                )
            )

        def arrive(name: str, duration: int) -> None:
            outcome = node.invoke(name, "POST", "/", {}, b"%d" % duration)
            if isinstance(outcome, asyncio.Future | Completion):
                outcome.add_done_callback(lambda done: statuses.append(done.result().status))
            else:
                statuses.append(outcome.status)

        for app, arrival, duration in zip(
            invocations.app.tolist(),
            invocations.arrival_us.tolist(),
            invocations.duration_us.tolist(),
            strict=True,
        ):
            clock.call_at(arrival, Phase.ARRIVAL, app, lambda n=f"app-{app}", d=duration: arrive(n, d))
        await clock.run(invocations.horizon_us)
        return node

    node = asyncio.run(main())
    counters = [node.core.counters(app, invocations.horizon_us) for app in range(invocations.n_apps)]
    result = PolicyResult(
        policy=node.policy.name,
        app_invocations=np.array([c.invocations for c in counters], dtype=np.int64),
        app_cold_starts=np.array([c.cold_starts for c in counters], dtype=np.int64),
        app_wasted_us=np.array([c.wasted_us for c in counters], dtype=np.int64),
        app_memory_mb=memory,
        evictions=node.core.evictions,
        rejections=node.core.rejections,
    )
    return result, node, statuses


def assert_same(
    invocations: Invocations, memory: np.ndarray, spec: str, capacity: float | None, tmp: Path
) -> None:
    simulated = EventSimulator(invocations, memory, capacity_mb=capacity).run(parse_policy(spec))
    live, node, statuses = run_live(invocations, memory, spec, capacity, tmp)
    assert live.app_invocations.tolist() == simulated.app_invocations.tolist()
    assert live.app_cold_starts.tolist() == simulated.app_cold_starts.tolist()
    assert live.app_wasted_us.tolist() == simulated.app_wasted_us.tolist()
    assert live.evictions == simulated.evictions
    assert live.rejections == simulated.rejections
    # What the node did to its instances matches what the core decided.
    assert statuses.count(503) == live.rejections
    running = sum(function.inflight for function in node.functions.values())  # past the horizon
    assert statuses.count(200) + running == live.invocations
    for name, function in node.functions.items():
        app = function.app
        assert bool(function.live()) == node.core.loaded(app), name
        assert node.report(name).cold_starts == live.app_cold_starts[app]
        assert node.report(name).wasted_mb_s == pytest.approx(live.app_wasted_us[app] * memory[app] / 1e6)
    reserved = sum(i.reserved_mb for f in node.functions.values() for i in f.instances)
    assert node.used_mb == pytest.approx(reserved)


@st.composite
def workloads(draw: st.DrawFn) -> tuple[Invocations, np.ndarray]:
    n_apps = draw(st.integers(1, 4))
    horizon = draw(st.integers(10, 240)) * MIN
    per_app = []
    for _ in range(n_apps):
        n = draw(st.integers(0, 15))
        scale = draw(st.sampled_from([S, 30 * S, 3 * MIN, 20 * MIN]))
        gaps = draw(st.lists(st.integers(0, 3 * scale), min_size=n, max_size=n))
        durations = draw(st.lists(st.integers(0, 2 * scale), min_size=n, max_size=n))
        start = draw(st.integers(0, 5)) * scale
        times = (start + np.cumsum(gaps)).tolist()
        per_app.append([(t, d) for t, d in zip(times, durations, strict=True) if t < horizon])
    memory = np.array(draw(st.lists(st.sampled_from([64.0, 128.0, 256.0]), min_size=n_apps, max_size=n_apps)))
    return make_invocations(per_app, horizon_us=horizon), memory


POLICY_SPECS = [
    "never-unload",
    "fixed:1m",
    "fixed:10m",
    "greedy-dual",
    "hybrid:range=30m,bin=1m",
    "hybrid:range=10m,bin=30s,cv=0.5,head=20,tail=80",
    "hybrid:range=5m,arima=off",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads(), st.sampled_from(POLICY_SPECS), st.sampled_from([None, 150.0, 300.0, 500.0]))
def test_live_node_on_a_fake_clock_matches_the_event_simulator(
    tmp_path_factory: pytest.TempPathFactory,
    workload: tuple[Invocations, np.ndarray],
    spec: str,
    capacity: float | None,
) -> None:
    invocations, memory = workload
    assert_same(invocations, memory, spec, capacity, tmp_path_factory.mktemp("state"))


def test_a_cold_start_without_room_is_503_in_both_engines(tmp_path: Path) -> None:
    # App 0 runs 0..10 min holding 300 of 400 MiB; app 1 arrives at 1 min (rejected) and at 12 min (app 0,
    # idle under fixed:10m, is evicted for it).
    inv = make_invocations([[(0, 10 * MIN)], [(MIN, S), (12 * MIN, S)]], horizon_us=H)
    memory = np.array([300.0, 300.0])
    assert_same(inv, memory, "fixed:10m", 400.0, tmp_path)
    live, node, statuses = run_live(inv, memory, "fixed:10m", 400.0, tmp_path)
    assert (live.rejections, live.evictions) == (1, 1)
    assert sorted(statuses) == [200, 200, 503]
    assert node.report("app-1").rejections == 1
    assert node.report("app-0").evictions == 1


def test_equal_ranks_evict_the_first_deployed_function(tmp_path: Path) -> None:
    inv = make_invocations([[(0, MIN)], [(30 * S, 30 * S)], [(2 * MIN, S)]], horizon_us=H)
    memory = np.array([100.0, 100.0, 100.0])
    assert_same(inv, memory, "fixed:30m", 250.0, tmp_path)
    _, node, _ = run_live(inv, memory, "fixed:30m", 250.0, tmp_path)
    assert node.report("app-0").evictions == 1
    assert node.report("app-1").evictions == 0


def test_scale_out_holds_memory_per_instance_and_the_idle_function_wastes_all_of_it(tmp_path: Path) -> None:
    # One instance runs one invocation: three overlapping calls of app 0 want three instances (100 MiB
    # each) in 250 MiB; app 1 (idle, loaded) is evicted for the second, the third finds no room.
    inv = make_invocations([[(MIN, MIN), (MIN + S, MIN), (MIN + 2 * S, MIN)], [(0, S)]], horizon_us=H)
    memory = np.array([100.0, 100.0])
    _, node, statuses = run_live(inv, memory, "fixed:10m", 250.0, tmp_path, concurrency=1)
    assert sorted(statuses) == [200, 200, 200, 503]
    app0, app1 = node.report("app-0"), node.report("app-1")
    assert (app0.cold_starts, app0.scale_outs, app0.rejections, app0.errors) == (1, 1, 0, 1)
    assert app1.evictions == 1
    # Two instances stay loaded for the 10-minute window after the last call ends: 2 x 100 MiB x 600 s.
    assert app0.wasted_mb_s == pytest.approx(2 * 100 * 600)
    assert node.used_mb == 0
