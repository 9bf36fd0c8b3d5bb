"""Live keep-alive: the node carries out the same policy objects as the simulator, with real instances."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from live_helpers import write_function
from strato.faas.live.httpio import Response
from strato.faas.live.platform import Node, NodeConfig
from strato.faas.live.registry import FunctionSpec
from strato.faas.policies.base import NEVER, KeepAlivePolicy, Window
from strato.faas.policies.fixed import FixedKeepAlive, NeverUnload
from strato.faas.policies.greedy_dual import GreedyDual

pytestmark = pytest.mark.system


class ScriptedPolicy(KeepAlivePolicy):
    """Always the same window; records what it was told."""

    name = "scripted"

    def __init__(self, prewarm_s: float, unload_s: float | None) -> None:
        self.window = Window(round(prewarm_s * 1e6), NEVER if unload_s is None else round(unload_s * 1e6))
        self.idle_times: list[int] = []
        self.invocations: list[bool] = []
        self.unloads = 0

    def on_invocation(self, state: Any, *, cold: bool, clock: float) -> None:
        self.invocations.append(cold)

    def on_idle_time(self, state: Any, idle_us: int) -> None:
        self.idle_times.append(idle_us)

    def on_unload(self, state: Any) -> None:
        self.unloads += 1

    def decide(self, state: Any) -> Window:
        return self.window


def run_node(
    tmp_path: Path,
    policy: KeepAlivePolicy,
    body: Callable[[Node], Awaitable[None]],
    *,
    time_scale: float = 1.0,
    budget_mb: float = float("inf"),
    functions: int = 1,
    memory_mb: float = 128.0,
) -> Node:
    code = write_function(tmp_path, "echo")

    async def main() -> Node:
        node = Node(
            NodeConfig(
                state_dir=tmp_path / "state", time_scale=time_scale, memory_budget_mb=budget_mb, sandbox=False
            ),
            policy,
        )
        await node.start()
        try:
            for index in range(functions):
                node.install(
                    FunctionSpec(
                        name=f"f{index}",
                        code_dir=str(code),
                        memory_mb=memory_mb,
                        version=1,
                        max_concurrency=64,
                    )
                )
            await body(node)
        finally:
            await node.stop()
        return node

    return asyncio.run(main())


async def invoke(node: Node, name: str, body: bytes) -> Response:
    outcome = node.invoke(name, "POST", "/", {}, body)
    return outcome if isinstance(outcome, Response) else await outcome


async def call(node: Node, name: str = "f0", body: bytes = b"x") -> int:
    return (await invoke(node, name, body)).status


def test_fixed_keepalive_unloads_after_its_window(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        assert await call(node) == 200
        function = node.functions["f0"]
        assert len(function.live()) == 1
        await asyncio.sleep(0.15)
        assert len(function.live()) == 1, "unloaded before the keep-alive window ended"
        await asyncio.sleep(0.3)
        assert function.live() == []
        assert await call(node) == 200
        assert node.report("f0").cold_starts == 2
        assert node.report("f0").unloads == 1

    run_node(tmp_path, FixedKeepAlive(0.3), body)


def test_prewarm_window_unloads_at_idle_and_loads_again_before_the_next_call(tmp_path: Path) -> None:
    policy = ScriptedPolicy(prewarm_s=0.25, unload_s=0.7)

    async def body(node: Node) -> None:
        function = node.functions["f0"]
        assert await call(node) == 200
        await asyncio.sleep(0.05)
        assert function.live() == [], "a pre-warm window unloads the app as soon as it goes idle"
        await asyncio.sleep(0.35)
        assert len(function.live()) == 1, "the pre-warm time loads it again"
        assert await call(node) == 200
        assert node.report("f0").cold_starts == 1
        assert node.report("f0").prewarms == 1
        await asyncio.sleep(0.05)
        assert function.live() == []
        await asyncio.sleep(1.0)
        assert function.live() == [], "unloaded again at the end of the window"

    run_node(tmp_path, policy, body)
    assert policy.invocations == [True, False]
    assert len(policy.idle_times) == 1
    assert 350_000 < policy.idle_times[0] < 600_000


def test_policy_time_is_scaled(tmp_path: Path) -> None:
    policy = ScriptedPolicy(prewarm_s=0, unload_s=30)  # 30 policy seconds = 0.5 s at 60x

    async def body(node: Node) -> None:
        function = node.functions["f0"]
        assert await call(node) == 200
        await asyncio.sleep(0.2)
        assert await call(node) == 200
        await asyncio.sleep(0.35)
        assert len(function.live()) == 1
        await asyncio.sleep(0.4)
        assert function.live() == []
        stats = node.stats()["functions"]["f0"]
        # Idle and loaded for ~0.2 s and then 0.5 s of real time, at 60x and 128 MiB.
        assert 0.6 * 60 * 128 < stats["wasted_mb_s"] < 0.85 * 60 * 128

    run_node(tmp_path, policy, body, time_scale=60)
    assert len(policy.idle_times) == 1
    assert 0.18 * 60e6 < policy.idle_times[0] < 0.3 * 60e6


def test_no_502_when_unloading_races_invocations(tmp_path: Path) -> None:
    statuses: list[int] = []

    async def body(node: Node) -> None:
        rng = random.Random(3)
        for _ in range(60):
            burst = [call(node) for _ in range(rng.randint(1, 4))]
            statuses.extend(await asyncio.gather(*burst))
            await asyncio.sleep(rng.choice([0.0, 0.0005, 0.001, 0.002, 0.004]))

    reports = []

    async def checked(node: Node) -> None:
        await body(node)
        reports.append(node.report("f0"))

    run_node(tmp_path, FixedKeepAlive(0.001), checked)
    assert set(statuses) == {200}
    assert reports[0].unloads > 10, "the test must actually race unloads"
    assert reports[0].invocations == len(statuses)


def test_memory_budget_evicts_least_recently_used_first(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        for name in ("f0", "f1"):
            assert await call(node, name) == 200
            await asyncio.sleep(0.02)
        assert node.used_mb == 256
        assert await call(node, "f2") == 200
        assert node.used_mb == 256
        assert node.report("f0").evictions == 1
        assert node.functions["f1"].live() and node.functions["f2"].live()

    run_node(tmp_path, NeverUnload(), body, budget_mb=300, functions=3)


def test_memory_budget_evicts_by_greedy_dual_priority(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        for _ in range(5):
            assert await call(node, "f0") == 200  # frequent: high priority
        assert await call(node, "f1") == 200
        assert await call(node, "f2") == 200
        assert node.report("f1").evictions == 1
        assert node.report("f0").evictions == 0

    run_node(tmp_path, GreedyDual(), body, budget_mb=300, functions=3)


def test_a_full_budget_with_everything_busy_is_503(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        slow = node.functions["f0"]
        slow.spec = FunctionSpec(
            name="f0",
            code_dir=str(write_function(tmp_path, "slow")),
            memory_mb=128,
            version=2,
            max_concurrency=8,
        )
        busy = asyncio.ensure_future(invoke(node, "f0", b"0.5"))
        await asyncio.sleep(0.2)
        response = await invoke(node, "f1", b"")
        assert response.status == 503
        assert b"memory budget" in response.body
        assert (await busy).status == 200
        rejected = node.report("f1")
        assert (rejected.rejections, rejected.invocations, rejected.cold_starts) == (1, 0, 0)
        assert node.functions["f1"].live() == []

    run_node(tmp_path, NeverUnload(), body, budget_mb=200, functions=2)
