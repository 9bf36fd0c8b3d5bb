"""Publish a simulated LLM inference cluster to Ganglia, one spoofed host per simulated machine.

:class:`LlmClusterFeed` runs the cluster simulator (:mod:`strato.llm.engine`) step by step;
:func:`publish` paces it against the wall clock (``speed`` simulated seconds per wall second) and, every
``interval_s``, sends each machine's state to a gmond as metrics of a host of its own (gmetric's spoofing,
:mod:`strato.monitor.gmetric`). Everything lands in the Ganglia group ``llm``:

==========================  ======  ===================================================================
metric                      type    meaning
==========================  ======  ===================================================================
``role``                    string  the pool the machine serves in now: ``prompt``, ``token`` or ``mixed``
``home_role``               string  the pool the design put it in (never changes)
``queued_prompts``          uint32  prompts waiting for a prefill iteration on it
``pending_prompt_tokens``   uint32  prompt tokens routed to it and not yet prefilled
``pending_decode_tokens``   uint32  output tokens of the unfinished requests whose decode it runs
``decoding``                uint32  requests in its decode batch
``kv_util``                 float   KV cache in use, 0..1
``busy``                    uint8   1 while it runs an iteration (prefill, mixed or decode)
``busy_fraction``           float   share of the simulated time so far it has been busy
``served_requests``         uint32  finished requests whose last token it produced
==========================  ======  ===================================================================

Why ``role`` is a metric and not a host name or a Ganglia cluster: Splitwise's mixed pool borrows prompt
and token machines when one phase falls behind and returns them when they go idle, so the set of machines
doing a job changes while the host names stay put. A C2MS group defined as ``role == "prompt"`` follows
machines in and out of the mixed pool; ``home_role`` keeps the design's view for comparison.

Host names are ``<prefix>-<p|t|m><NN>``: the prefix defaults to the design name, the letter is the home
pool (prompt, token, mixed) and ``NN`` the machine's index within that pool, e.g. ``splitwise-hh-p00``,
``splitwise-hh-t01``, ``baseline-h100-m03``. Addresses are fake, stable and unique within one feed:
``<ip_prefix>.<i // 254>.<i % 254 + 1>`` for the ``i``-th machine of the design (``10.77.0.1`` ...); give
two feeds published to one gmond different ``ip_prefix`` values.

The default setup (Splitwise-HH, 2 prompt + 2 token DGX-H100, Llama2-70B, synthetic coding traffic at
7 req/s, seed 0) runs the prompt pool close enough to full that both token machines are borrowed into the
mixed pool and handed back, each changing role 4 times in the first simulated minute.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from strato.errors import ConfigError
from strato.llm.catalog import get_model
from strato.llm.designs import make_design
from strato.llm.engine import ClusterSimulator, ClusterSnapshot, MachineSnapshot, SchedulerConfig
from strato.llm.perf import load_perf_model
from strato.monitor.gmetric import GmetricSender, MetricSpec, spoof_id
from strato.monitor.llm_feed_defaults import (
    DEFAULT_ARRIVALS_S,
    DEFAULT_DESIGN,
    DEFAULT_IP_PREFIX,
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DEFAULT_RATE_RPS,
    DEFAULT_TOKEN,
    DEFAULT_TRACE,
)
from strato.traces.llm import LlmRequests, load_requests

GROUP = "llm"
ROLES = ("prompt", "token", "mixed")
_ROLE_LETTER = {"prompt": "p", "token": "t", "mixed": "m"}
# Datagrams sent back to back before yielding the CPU, so a local gmond's receive buffer keeps up with
# large clusters (10 metrics per machine each tick).
_PACE_EVERY = 200


@dataclass(frozen=True, slots=True)
class MachineSample:
    """One simulated machine at one instant, as published (see the module docstring for each field)."""

    name: str
    ip: str
    role: str
    home_role: str
    queued_prompts: int
    pending_prompt_tokens: int
    pending_decode_tokens: int
    decoding: int
    kv_util: float
    busy: int
    busy_fraction: float
    served_requests: int

    @property
    def spoof(self) -> str:
        return spoof_id(self.ip, self.name)


def machine_names(snapshot: ClusterSnapshot, prefix: str) -> list[str]:
    """Stable host names, one per machine in the design's order: ``<prefix>-<p|t|m><index in pool>``."""
    seen: dict[str, int] = {}
    names = []
    for machine in snapshot.machines:
        index = seen.get(machine.home_role, 0)
        seen[machine.home_role] = index + 1
        names.append(f"{prefix}-{_ROLE_LETTER[machine.home_role]}{index:02d}")
    return names


def machine_ips(count: int, ip_prefix: str = DEFAULT_IP_PREFIX) -> list[str]:
    """Fake unique addresses ``<ip_prefix>.x.y`` (y never 0 or 255), one per machine."""
    octets = ip_prefix.split(".")
    if len(octets) != 2 or not all(o.isdigit() and 0 <= int(o) <= 255 for o in octets):
        raise ConfigError(f"ip prefix must be two octets such as 10.77, not {ip_prefix!r}")
    if count > 254 * 256:
        raise ConfigError(f"{count} machines do not fit in {ip_prefix}.0.0/16")
    return [f"{ip_prefix}.{i // 254}.{i % 254 + 1}" for i in range(count)]


class LlmClusterFeed:
    """A cluster simulation that can be stopped at any simulated time and read machine by machine.

    Built like ``strato llm simulate`` builds a run (design and pool sizes, model, analytic or profiled
    performance model, a ``--trace`` source resampled at ``rate_rps``), or from ready ``requests``.
    ``rate_rps=None`` keeps the trace's own arrivals (synthetic traces: their mean rate).
    ``duration_s`` is the simulated seconds of arrivals; the simulation then drains what is left.
    """

    def __init__(
        self,
        design: str = DEFAULT_DESIGN,
        *,
        prompt: int | None = DEFAULT_PROMPT,
        token: int | None = DEFAULT_TOKEN,
        machines: int | None = None,
        model: str = DEFAULT_MODEL,
        trace: str = DEFAULT_TRACE,
        rate_rps: float | None = DEFAULT_RATE_RPS,
        duration_s: float = DEFAULT_ARRIVALS_S,
        seed: int = 0,
        perf: str | None = None,
        requests: LlmRequests | None = None,
        config: SchedulerConfig | None = None,
        prefix: str | None = None,
        ip_prefix: str = DEFAULT_IP_PREFIX,
    ) -> None:
        llm = get_model(model)
        self.design = make_design(design, prompt=prompt, token=token, machines=machines)
        perf_models = {
            pool.machine.name: load_perf_model(perf, llm, pool.machine, 8) for pool in self.design.pools
        }
        if requests is None:
            requests = load_requests(trace, rate_rps=rate_rps, duration_s=duration_s, seed=seed)
        self.requests = requests
        self.simulator = ClusterSimulator(self.design, llm, perf_models, config)
        self.simulator.start(requests)
        self._running = self.simulator.running
        self.names = machine_names(self.simulator.snapshot(), prefix or self.design.name)
        self.ips = machine_ips(len(self.names), ip_prefix)

    @property
    def now(self) -> float:
        """Simulated seconds since the first arrival window opened."""
        return self.simulator.now

    @property
    def done(self) -> bool:
        """Every request has finished: nothing will change any more."""
        return not self._running

    def advance_to(self, until_s: float) -> bool:
        """Run every event up to simulated time ``until_s``; True while the simulation goes on."""
        if self._running:
            self._running = self.simulator.advance(until_s)
        return self._running

    def advance(self, by_s: float) -> bool:
        """Run ``by_s`` more simulated seconds; True while the simulation goes on."""
        return self.advance_to(self.now + by_s)

    def samples(self) -> list[MachineSample]:
        snapshot = self.simulator.snapshot()
        return [
            _sample(name, ip, machine, snapshot.now_s)
            for name, ip, machine in zip(self.names, self.ips, snapshot.machines, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "design": self.design.label(),
            "trace": self.requests.name,
            "requests": len(self.requests),
            "machines": dict(zip(self.names, self.ips, strict=True)),
        }


def _sample(name: str, ip: str, machine: MachineSnapshot, now_s: float) -> MachineSample:
    return MachineSample(
        name=name,
        ip=ip,
        role=machine.role,
        home_role=machine.home_role,
        queued_prompts=machine.queued_prompts,
        pending_prompt_tokens=machine.pending_prompt_tokens,
        pending_decode_tokens=machine.pending_decode_tokens,
        decoding=machine.decoding,
        kv_util=machine.kv_util,
        busy=int(machine.busy),
        # A prefill or mixed iteration is booked whole when it starts: cap what it books early.
        busy_fraction=min(machine.busy_s / now_s, 1.0) if now_s > 0 else 0.0,
        served_requests=machine.served_requests,
    )


def metric_specs(interval_s: float) -> dict[str, MetricSpec]:
    """The published metrics; a value is due every ``interval_s``, so twice that is already late."""
    tmax = max(1, math.ceil(2 * interval_s))

    def spec(name: str, kind: str, units: str, description: str) -> MetricSpec:
        return MetricSpec(
            name,
            kind,
            units,
            tmax=tmax,
            dmax=0,
            group=GROUP,
            title=name.replace("_", " "),
            description=description,
        )

    return {
        s.name: s
        for s in (
            spec("role", "string", "", "Pool the machine serves in now (prompt, token, mixed)"),
            spec("home_role", "string", "", "Pool the design put the machine in"),
            spec("queued_prompts", "uint32", "requests", "Prompts waiting for a prefill"),
            spec("pending_prompt_tokens", "uint32", "tokens", "Prompt tokens not yet prefilled"),
            spec("pending_decode_tokens", "uint32", "tokens", "Output tokens of unfinished decodes"),
            spec("decoding", "uint32", "requests", "Requests in the decode batch"),
            spec("kv_util", "float", "fraction", "KV cache in use"),
            spec("busy", "uint8", "", "1 while an iteration runs"),
            spec("busy_fraction", "float", "fraction", "Busy share of the simulated time so far"),
            spec(
                "served_requests", "uint32", "requests", "Finished requests whose last token came from here"
            ),
        )
    }


@dataclass(frozen=True, slots=True)
class Tick:
    """What one tick published (``on_tick`` gets it right after the datagrams left)."""

    index: int
    wall_s: float
    sim_s: float
    samples: list[MachineSample]
    role_changes: list[str]
    """Names of the machines whose role differs from the previous tick's."""


@dataclass(frozen=True)
class PublishSummary:
    ticks: int
    skipped_ticks: int
    """Ticks not sent because the one before overran its interval (the simulation still kept pace)."""
    datagrams: int
    wall_s: float
    sim_s: float
    finished: bool
    """The simulation ran to its end (else the wall-clock duration ran out or it was interrupted)."""
    interrupted: bool
    role_changes: dict[str, int]
    last_samples: list[MachineSample]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def publish(
    feed: LlmClusterFeed,
    sender: GmetricSender,
    *,
    speed: float = 1.0,
    interval_s: float = 1.0,
    duration_s: float | None = None,
    on_tick: Callable[[Tick], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishSummary:
    """Every ``interval_s`` wall seconds, move the simulation on by ``interval_s * speed`` simulated
    seconds and send every machine's metrics; stop when the simulation ends or after ``duration_s``
    wall seconds (None: run to the end). Ctrl-C stops it too, with the summary so far.

    Tick ``k`` is due at ``start + k * interval_s`` and shows simulated time ``k * interval_s * speed``:
    deadlines are absolute, so sending and simulating never make the schedule drift. A tick that runs
    past the next deadline by a whole interval drops the ticks it missed and jumps the simulation to the
    current slot, keeping simulated time tied to the wall clock.
    """
    if not speed > 0 or not interval_s > 0:
        raise ConfigError(f"speed and interval must be positive (got {speed!r}, {interval_s!r})")
    if duration_s is not None and not duration_s >= 0:
        raise ConfigError(f"duration must be zero or more wall seconds, got {duration_s!r}")
    last_tick = None if duration_s is None else math.floor(duration_s / interval_s + 1e-9)
    specs = list(metric_specs(interval_s).values())
    role_changes = dict.fromkeys(feed.names, 0)
    samples: list[MachineSample] = []
    ticks = skipped = datagrams = 0
    interrupted = False
    previous: dict[str, str] = {}
    start = clock()
    tick = 0
    try:
        while True:
            feed.advance_to(tick * interval_s * speed)
            samples = feed.samples()
            datagrams += sender.send_many(
                ((spec, getattr(sample, spec.name), sample.spoof) for sample in samples for spec in specs),
                pace_every=_PACE_EVERY,
            )
            changed = [s.name for s in samples if previous.get(s.name, s.role) != s.role]
            for name in changed:
                role_changes[name] += 1
            previous = {s.name: s.role for s in samples}
            ticks += 1
            if on_tick is not None:
                on_tick(Tick(tick, clock() - start, feed.now, samples, changed))
            if feed.done or (last_tick is not None and tick >= last_tick):
                break
            tick += 1
            wait = start + tick * interval_s - clock()
            if wait > 0:
                sleep(wait)
            elif -wait >= interval_s:
                current = math.floor((clock() - start) / interval_s)
                if last_tick is not None:
                    current = min(current, last_tick)
                if current > tick:
                    skipped += current - tick
                    tick = current
    except KeyboardInterrupt:
        interrupted = True
    return PublishSummary(
        ticks=ticks,
        skipped_ticks=skipped,
        datagrams=datagrams,
        wall_s=clock() - start,
        sim_s=feed.now if ticks else 0.0,
        finished=feed.done,
        interrupted=interrupted,
        role_changes=role_changes,
        last_samples=samples,
    )
