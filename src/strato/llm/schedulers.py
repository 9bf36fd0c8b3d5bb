"""Cluster-level schedulers: which machine runs a request's prompt and which its decode.

A router is a small object the engine asks once per arriving request; it reads the machines' state
(:class:`~strato.llm.engine.MachineState`: queues, pending work, reserved KV) and may move machines between
pools through the cluster it is given. New routers plug in with :func:`register_router` and are named by
``SchedulerConfig.router``; the same router objects serve every design.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from strato.core.registry import Registry

if TYPE_CHECKING:
    from strato.llm.engine import ClusterSimulator, MachineState


def pending_work(node: MachineState) -> int:
    """Work a machine still owes: prompt tokens not yet prefilled plus one per unfinished request."""
    return node.pending_prompt_tokens + node.unfinished


class Router(ABC):
    name = "router"

    @abstractmethod
    def route(
        self, cluster: ClusterSimulator, prompt_tokens: int, output_tokens: int
    ) -> tuple[MachineState, MachineState]:
        """(prompt machine, token machine) for a new request; the same machine twice chains both phases."""


class JoinShortestQueue(Router):
    """Baselines: the machine with the least pending work runs both phases."""

    name = "jsq"

    def route(
        self, cluster: ClusterSimulator, prompt_tokens: int, output_tokens: int
    ) -> tuple[MachineState, MachineState]:
        node = min(cluster.pools["mixed"] or cluster.nodes, key=pending_work)
        return node, node


class MixedPool(Router):
    """Splitwise: prompt and token pools, plus a mixed pool that borrows machines when one phase is full.

    The prompt machine is the least loaded of the prompt pool unless its queue is *long* (waiting work and
    more than ``prompt_queue_limit_tokens`` pending); the token machine has the least reserved KV (or the
    least output still to generate) unless the request would overflow it. Failing that, the mixed pool;
    failing that, a machine is borrowed from the other pool into the mixed pool; failing that, the least
    loaded machine runs both phases.
    """

    name = "mixed-pool"

    def route(
        self, cluster: ClusterSimulator, prompt_tokens: int, output_tokens: int
    ) -> tuple[MachineState, MachineState]:
        pools = cluster.pools
        prompt_node = self._prompt_machine(cluster, prompt_tokens, pools["prompt"]) or self._prompt_machine(
            cluster, prompt_tokens, pools["mixed"]
        )
        token_node = self._token_machine(
            cluster, prompt_tokens + output_tokens, pools["token"]
        ) or self._token_machine(cluster, prompt_tokens + output_tokens, pools["mixed"])
        if prompt_node is None and pools["token"]:
            prompt_node = cluster.borrow(min(pools["token"], key=pending_work))
        if token_node is None and pools["prompt"]:
            token_node = cluster.borrow(min(pools["prompt"], key=lambda node: node.reserved_tokens))
        if prompt_node is None or token_node is None:
            node = min(cluster.nodes, key=pending_work)
            return node, node
        return prompt_node, token_node

    @staticmethod
    def _prompt_machine(
        cluster: ClusterSimulator, prompt_tokens: int, pool: list[MachineState]
    ) -> MachineState | None:
        if not pool:
            return None
        node = min(pool, key=pending_work)
        waiting = bool(node.prompt_queue or node.join_queue)
        if waiting and pending_work(node) + prompt_tokens > cluster.config.prompt_queue_limit_tokens:
            return None
        return node

    @staticmethod
    def _token_machine(cluster: ClusterSimulator, need: int, pool: list[MachineState]) -> MachineState | None:
        if not pool:
            return None
        if cluster.config.token_routing == "memory":
            node = min(pool, key=lambda candidate: candidate.reserved_tokens)
        else:
            node = min(pool, key=lambda candidate: candidate.pending_decode_tokens)
        if node.reserved_tokens + need >= node.kv_capacity:
            return None
        return node


ROUTERS: Registry[Callable[[], Router]] = Registry("router")


def register_router(name: str, factory: Callable[[], Router]) -> None:
    ROUTERS.register(name, factory)


def make_router(name: str, *, split: bool) -> Router:
    """``auto`` picks join-the-shortest-queue for all-mixed designs and the mixed pool for split ones."""
    if name == "auto":
        name = MixedPool.name if split else JoinShortestQueue.name
    return ROUTERS.get(name)()


register_router(JoinShortestQueue.name, JoinShortestQueue)
register_router(MixedPool.name, MixedPool)
