"""The oversubscription environment: nodes packed with VMs, a ratio per node per window, risk and benefit.

Packing (documented choice). Each node has ``cores`` physical cores. VMs are placed first-fit in a seeded
random order until a node's vCPUs reach its cores (oversubscription off); ``packings`` different orders
give more node samples from the same VMs (each VM sits on one node per packing). A node's *utilisation*
``u(t)`` is its VMs' summed usage (vCPUs x CPU %) over their summed vCPUs, from the per-slot maximum
readings for risk and the averages for description.

Decision. Per node and window (a day by default) a policy picks a ratio ``r`` from a discrete set; the node
then sells ``r x cores`` vCPUs, filled with VMs of the same mix, so its demand is ``r x cores x u(t)``.
That scaling is the standard usage-to-allocation abstraction: it asks "how many vCPUs can this node's
workload be sold at", not which extra VM arrives.

Metrics over evaluated node-windows (confidence intervals over nodes):
* risk: the fraction of node-slots whose demand exceeds the physical cores, ``r u(t) > 1``;
* severity: the excess, in core-minutes per node-day;
* benefit: vCPUs sold beyond physical cores, ``(r - 1) x cores`` (stranded cores avoided), per node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from strato.core.rng import RandomStreams
from strato.errors import ConfigError
from strato.vm.model import VmUsage

DEFAULT_RATIOS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 2.0)


@dataclass(frozen=True)
class EnvConfig:
    cores: int = 16
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    window_days: int = 1
    packings: int = 5
    history_days: int = 7
    """How much of the past a policy sees at each decision."""
    seed: int = 0
    packing: str = "random"
    """``random``: first-fit in a seeded random order (mixed nodes); ``by-class``: each node holds VMs of
    one class only (experiments where a node's pattern class must be known)."""

    def __post_init__(self) -> None:
        if self.cores < 1:
            raise ConfigError("a node needs at least one physical core")
        if not self.ratios or sorted(self.ratios) != list(self.ratios) or self.ratios[0] < 1.0:
            raise ConfigError(f"ratios must be increasing and start at 1.0 or more, got {self.ratios}")
        if self.window_days < 1 or self.packings < 1 or self.history_days < 1:
            raise ConfigError("window_days, packings and history_days must be at least 1")
        if self.packing not in ("random", "by-class"):
            raise ConfigError(f"packing must be random or by-class, not {self.packing!r}")


@dataclass(frozen=True)
class Nodes:
    """Every node of every packing: its VMs and its utilisation series."""

    members: list[np.ndarray]
    """VM indices per node."""
    packing: np.ndarray
    """(nodes,) which packing a node comes from."""
    util_max: np.ndarray
    """(nodes, slots) u(t) from the max readings, in [0, 1]."""
    util_avg: np.ndarray
    """(nodes, slots) u(t) from the averages."""
    allocated: np.ndarray
    """(nodes,) vCPUs placed at ratio 1 (<= cores)."""
    vm_class: list[list[str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.util_max.shape[0])


def pack(usage: VmUsage, config: EnvConfig) -> Nodes:
    """First-fit VMs into nodes of ``config.cores``, once per packing order."""
    too_big = [vm for vm, size in zip(usage.vm_ids, usage.vcpus.tolist(), strict=True) if size > config.cores]
    if too_big:
        raise ConfigError(
            f"{len(too_big)} VM(s) have more vCPUs than a node's {config.cores} cores (e.g. {too_big[0]}); "
            "use larger nodes (--cores)"
        )
    total = int(usage.vcpus.sum())
    if total < config.cores:
        raise ConfigError(
            f"{usage.name}: {usage.vms} VMs with {total} vCPUs in all cannot fill one node of "
            f"{config.cores} cores; use smaller nodes (--cores) or more VMs"
        )
    streams = RandomStreams(config.seed)
    members: list[np.ndarray] = []
    packing_of: list[int] = []
    for packing in range(config.packings):
        order = streams.stream(f"packing-{packing}").permutation(usage.vms).tolist()
        groups = (
            [[vm for vm in order if usage.vm_class[vm] == name] for name in sorted(set(usage.vm_class))]
            if config.packing == "by-class"
            else [order]
        )
        bins: list[list[int]] = []
        free: list[int] = []
        for group in groups:
            first_bin = len(bins)
            for vm in group:
                size = int(usage.vcpus[vm])
                for index in range(first_bin, len(free)):
                    if free[index] >= size:
                        bins[index].append(vm)
                        free[index] -= size
                        break
                else:
                    bins.append([vm])
                    free.append(config.cores - size)
        # A node left less than half full is the packing's remainder, not a node anyone would run.
        for placed, room in zip(bins, free, strict=True):
            if config.cores - room >= config.cores / 2:
                members.append(np.array(sorted(placed)))
                packing_of.append(packing)
    weights = usage.vcpus.astype(float)
    util_max = np.empty((len(members), usage.slots))
    util_avg = np.empty((len(members), usage.slots))
    allocated = np.empty(len(members))
    for node, vms in enumerate(members):
        w = weights[vms]
        allocated[node] = w.sum()
        util_max[node] = usage.max_pct[:, vms] @ w / (100 * w.sum())
        util_avg[node] = usage.avg_pct[:, vms] @ w / (100 * w.sum())
    return Nodes(
        members=members,
        packing=np.array(packing_of),
        util_max=np.clip(util_max, 0.0, 1.0),
        util_avg=np.clip(util_avg, 0.0, 1.0),
        allocated=allocated,
        vm_class=[[usage.vm_class[vm] for vm in vms.tolist()] for vms in members],
    )


@dataclass(frozen=True)
class Windows:
    """Node-windows: which node, which window, the slots it covers."""

    node: np.ndarray
    window: np.ndarray
    slots_per_window: int

    @property
    def count(self) -> int:
        return int(self.node.shape[0])


def windows(nodes: Nodes, config: EnvConfig, slots_per_day: int, days: range) -> Windows:
    """Every (node, window) whose window starts at one of ``days`` and lies wholly inside the data."""
    per = slots_per_day * config.window_days
    total = nodes.util_max.shape[1] // per
    chosen = [day // config.window_days for day in days if day % config.window_days == 0]
    chosen = [w for w in chosen if 0 <= w < total]
    node_index, window_index = np.meshgrid(np.arange(nodes.count), np.array(chosen, dtype=int), indexing="ij")
    return Windows(node_index.ravel(), window_index.ravel(), per)


def window_series(series: np.ndarray, spans: Windows) -> np.ndarray:
    """(node-windows, slots) the series inside each window."""
    per = spans.slots_per_window
    offsets = spans.window[:, None] * per + np.arange(per)[None, :]
    chosen: np.ndarray = series[spans.node[:, None], offsets]
    return chosen


def history_series(series: np.ndarray, spans: Windows, slots: int) -> np.ndarray:
    """(node-windows, slots) the ``slots`` just before each window (NaN where the data has not begun)."""
    start = spans.window * spans.slots_per_window
    offsets = start[:, None] - slots + np.arange(slots)[None, :]
    valid = offsets >= 0
    values = series[spans.node[:, None], np.clip(offsets, 0, None)]
    return np.where(valid, values, np.nan)


@dataclass(frozen=True)
class Outcome:
    """Per node-window results of one policy."""

    ratio: np.ndarray
    overloaded_slots: np.ndarray
    excess_core_minutes: np.ndarray
    benefit_vcpus: np.ndarray


def outcome(ratios: np.ndarray, future_max: np.ndarray, cores: int, slot_s: int) -> Outcome:
    """Risk and benefit of ``ratios`` (one per node-window) against the windows' real utilisation."""
    demand = ratios[:, None] * future_max  # in units of the node's physical cores
    excess = np.clip(demand - 1.0, 0.0, None)
    return Outcome(
        ratio=ratios,
        overloaded_slots=(demand > 1.0).sum(axis=1),
        excess_core_minutes=excess.sum(axis=1) * cores * slot_s / 60,
        benefit_vcpus=(ratios - 1.0) * cores,
    )


def oracle_ratios(future_max: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    """Hindsight: the largest ratio whose window never exceeds the physical cores."""
    peak = future_max.max(axis=1)
    allowed = np.asarray(ratios)
    fits = allowed[None, :] * peak[:, None] <= 1.0 + 1e-12
    best: np.ndarray = np.where(fits, allowed[None, :], allowed[0]).max(axis=1)
    return best


def snap_down(values: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    """The largest allowed ratio <= each value (1.0 stays the floor)."""
    allowed = np.asarray(ratios)
    index = np.searchsorted(allowed, values + 1e-9, side="right") - 1
    return allowed[np.clip(index, 0, None)]
