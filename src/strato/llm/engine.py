"""An iteration-level, event-driven simulator of an LLM inference cluster (baselines and Splitwise).

Layers, as in Vidur: *entities* (requests, machines), a *router* (cluster-level join-the-shortest-queue),
*batchers* (what one machine runs in its next iteration) and the *performance model* (how long that
iteration takes, :mod:`strato.llm.perf`). A design (:mod:`strato.llm.designs`) is a list of machine pools
with roles: ``mixed`` machines run prompts and decodes together (continuous batching, the baselines);
``prompt`` and ``token`` machines split the phases (Splitwise) and ship the KV cache between them.

Speed comes from skipping iterations: while a machine only decodes and no request joins or leaves, every
iteration takes the same time, so the next event on it is the next completion, found at the top of a heap
of per-request finishing iteration numbers. Work is proportional to requests, not to generated tokens.

Semantics (choices where the paper is silent are parameters of :class:`SchedulerConfig`):

* prompt batches are FCFS and hold at most ``max_batch_tokens`` prompt tokens (a longer prompt runs alone)
  and ``max_batch_requests`` requests; a prompt's first token is produced when its prefill ends (TTFT);
* a decode iteration produces one token for every request in the batch; its time is priced at the start
  of each stretch from the batch size and the KV the batch has reserved (each request's prompt plus all
  its output), so context growth within a stretch is not re-priced;
* a token machine admits a request when its KV cache has room for the request's final context (prompt +
  output), else queues it FCFS; mixed machines do the same for prompts;
* a request joins or a prompt enters a running decode stretch at the next iteration boundary;
* the KV cache moves from prompt to token machine over the slower of the two machines' links: whole before
  decoding starts for prompts under ``layerwise_min_prompt`` tokens (serialised), otherwise layer by layer
  during the prefill so only the last layer's share is not hidden;
* requests with one output token finish with their prompt.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from strato.errors import ConfigError
from strato.llm.catalog import LlmModel, kv_capacity_tokens
from strato.llm.designs import Design
from strato.llm.metrics import RequestTimes
from strato.llm.perf import PerfModel
from strato.llm.schedulers import make_router
from strato.traces.llm import LlmRequests


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch_tokens: int = 2048
    max_batch_requests: int = 512
    layerwise_min_prompt: int = 512
    kv_reserve_fraction: float = 0.10
    kv_sizing: str = "model"
    """``model``: the model's real KV bytes per token (grouped-query attention where it has it);
    ``mha``: full multi-head sizing as the public simulator does (8x too large for Llama2-70B)."""
    transfer: str = "layerwise"
    """``layerwise`` (the paper: overlapped from ``layerwise_min_prompt`` tokens) or ``serial`` (whole)."""
    transfer_bytes_per_s: float | None = None
    """Fixed KV transfer rate; None uses the slower machine's InfiniBand across its GPUs."""
    prompt_queue_limit_tokens: int = 8192
    """A prompt machine with waiting work and more pending prompt tokens than this is "long": the prompt
    goes to the mixed pool, or a token machine is borrowed for it (Splitwise's mixed pool)."""
    max_preemptions: int | None = None
    """Preemption cap: a decode left out of this many mixed iterations in a row goes before new prompts.
    None (the default, and the public simulator's effective behaviour) lets prompts always go first."""
    router: str = "auto"
    """The cluster-level scheduler (:mod:`strato.llm.schedulers`): ``auto``, ``jsq``, ``mixed-pool``, ..."""
    token_routing: str = "pending-tokens"
    """Token machine choice: least ``pending-tokens`` (output tokens still to generate) or least reserved
    KV ``memory`` (the public simulator)."""

    def __post_init__(self) -> None:
        if self.max_batch_tokens < 1 or self.max_batch_requests < 1:
            raise ConfigError("batch limits must be at least 1")
        for name, value, allowed in (
            ("kv_sizing", self.kv_sizing, ("model", "mha")),
            ("transfer", self.transfer, ("layerwise", "serial")),
            ("token_routing", self.token_routing, ("pending-tokens", "memory")),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")

    @classmethod
    def public_simulator(cls) -> SchedulerConfig:
        """The public Splitwise simulator's choices (docs/splitwise-sim.md)."""
        return cls(
            kv_sizing="mha",
            transfer="serial",
            transfer_bytes_per_s=200 * 2**30,
            token_routing="memory",
            kv_reserve_fraction=0.0,
        )


_ARRIVAL, _JOIN, _BOUNDARY, _COMPLETION = range(4)

PHASE_IDLE, PHASE_PREFILL, PHASE_DECODE = range(3)
"""Kinds of :attr:`ClusterSimulator.phase_log` entries: a machine idle, running an iteration with prompts
(prefill or mixed), or in a decode-only stretch."""


@dataclass
class MachineState:
    """One machine: its queues, its decode stretch and what it has been busy with."""

    index: int
    role: str
    """The pool the design put it in; ``pool`` is where it serves now (a borrowed machine is ``mixed``)."""
    perf: PerfModel
    kv_capacity: int
    link_bytes_per_s: float
    prompt_queue: deque[int] = field(default_factory=deque)
    pending_prompt_tokens: int = 0
    pending_decode_tokens: int = 0
    reserved_tokens: int = 0
    """KV the router has promised to requests routed here and not finished (token routing by memory)."""
    unfinished: int = 0
    """Requests whose decode was routed here and that have not finished."""
    prompt_busy: bool = False
    join_queue: deque[int] = field(default_factory=deque)
    decoding: list[tuple[int, int]] = field(default_factory=list)
    """Heap of (iteration number at which the request's last token is produced, request); entries whose
    number no longer matches ``finish`` are stale (the request sat out a mixed iteration)."""
    finish: dict[int, int] = field(default_factory=dict)
    """The decoding requests and their current finishing iteration numbers."""
    decode_order: list[int] = field(default_factory=list)
    """Who rides a mixed iteration first when its token budget is short: those left out last time, then
    the rest in the order they started decoding."""
    kv_used: int = 0
    stretch_start_s: float = 0.0
    stretch_start_iteration: int = 0
    iteration_s: float = 0.0
    iterations: int = 0
    version: int = 0
    """Bumped whenever the node's plan changes; events carrying an older version are stale."""
    boundary_pending: bool = False
    current_batch: list[int] = field(default_factory=list)
    sat_out: dict[int, int] = field(default_factory=dict)
    """Decodes left out of the last mixed iterations, and how many in a row (the preemption cap)."""
    busy_s: float = 0.0
    pool: str = ""
    served: int = 0
    """Finished requests whose last token this machine produced."""
    prompt_slowdown: float | Callable[[int], float] = 1.0
    """Multiplier on prefill and mixed iteration times (a locked or capped clock, :meth:`set_slowdown`),
    or a function of the iteration's prompt tokens (a power-bound prefill slows less)."""
    token_slowdown: float = 1.0
    """Multiplier on decode iteration times."""


@dataclass(frozen=True, slots=True)
class MachineSnapshot:
    """One machine as an observer sees it at the simulator's ``now`` (:meth:`ClusterSimulator.snapshot`)."""

    index: int
    """Position in the design's order: pool by pool, as :attr:`Design.pools` lists them."""
    home_role: str
    """The pool the design put it in: ``prompt``, ``token`` or ``mixed``."""
    role: str
    """The pool it serves in now (a machine the mixed pool borrowed is ``mixed`` until it is idle)."""
    queued_prompts: int
    """Prompts waiting for a prefill iteration on it."""
    queued_decodes: int
    """Requests whose KV cache has arrived, waiting for room in its decode batch."""
    pending_prompt_tokens: int
    """Prompt tokens routed to it and not yet prefilled."""
    pending_decode_tokens: int
    """Output tokens still to generate for the unfinished requests whose decode it runs."""
    decoding: int
    """Requests in its decode batch."""
    kv_used_tokens: int
    """KV cache held now; the first prompt of a batch goes whatever its size, so it can pass capacity."""
    kv_capacity_tokens: int
    busy: bool
    """An iteration (prefill, mixed or decode) is running."""
    busy_s: float
    """Busy seconds so far: a decode stretch up to ``now``, a prefill or mixed iteration whole from its
    start (the engine prices an iteration when it begins)."""
    served_requests: int
    """Finished requests whose last token it produced."""

    @property
    def kv_util(self) -> float:
        """KV cache in use, 0..1."""
        if not self.kv_capacity_tokens:
            return 0.0
        return min(max(self.kv_used_tokens / self.kv_capacity_tokens, 0.0), 1.0)


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    now_s: float
    machines: tuple[MachineSnapshot, ...]
    running: bool
    """Events remain: requests still to arrive or finish."""


class ClusterSimulator:
    """Run one design on one set of requests: :meth:`run` at once, or :meth:`start`, then :meth:`advance`
    as far as wanted (a live feed reads :meth:`snapshot` between steps), then :meth:`result`."""

    def __init__(
        self,
        design: Design,
        model: LlmModel,
        perf_models: dict[str, PerfModel],
        config: SchedulerConfig | None = None,
    ) -> None:
        self.design = design
        self.model = model
        self.config = config or SchedulerConfig()
        self.nodes: list[MachineState] = []
        self.kv_bytes_per_token = (
            model.kv_bytes_per_token
            if self.config.kv_sizing == "model"
            else 2 * model.hidden_size * model.layers * model.dtype_bytes
        )
        for pool in design.pools:
            perf = perf_models[pool.machine.name]
            capacity = kv_capacity_tokens(
                model, pool.machine, perf.tensor_parallel, self.config.kv_reserve_fraction
            )
            if self.config.kv_sizing == "mha":
                free = pool.machine.hbm_bytes * (1 - self.config.kv_reserve_fraction) - model.weight_bytes
                capacity = int(free // self.kv_bytes_per_token)
            for _ in range(pool.count):
                self.nodes.append(
                    MachineState(
                        len(self.nodes), pool.role, perf, capacity, pool.machine.interconnect_bytes_per_s
                    )
                )
        for node in self.nodes:
            node.pool = node.role
        self.pools: dict[str, list[MachineState]] = {
            role: [node for node in self.nodes if node.role == role] for role in ("prompt", "token", "mixed")
        }
        self.split = bool(self.pools["prompt"] or self.pools["token"])
        if self.split and not (self.pools["prompt"] and self.pools["token"]):
            raise ConfigError(f"design {design.name} needs machines for both prompts and tokens")
        self.token_nodes = self.pools["token"] or self.pools["mixed"]
        self.router = make_router(self.config.router, split=self.split)
        self.phase_log: list[tuple[float, int, int, int, int]] | None = None
        """With :meth:`record_phases`, what each machine starts doing and when: ``(time_s, machine, kind,
        prompt_tokens, batch)``; an entry holds until the machine's next one (power models read it)."""

    # ---- running ---------------------------------------------------------------------------------

    def run(self, requests: LlmRequests) -> RequestTimes:
        self.start(requests)
        self.advance(math.inf)
        return self.result()

    def start(self, requests: LlmRequests) -> None:
        """Load ``requests`` and stand at time 0; :meth:`advance` then moves the clock."""
        n = len(requests)
        self.requests = requests
        self.prompt: list[int] = requests.prompt_tokens.tolist()
        self.output: list[int] = requests.output_tokens.tolist()
        largest = max((p + o for p, o in zip(self.prompt, self.output, strict=True)), default=0)
        smallest_capacity = min(node.kv_capacity for node in self.token_nodes)
        if largest > smallest_capacity:
            raise ConfigError(
                f"a request needs {largest} tokens of KV cache but a token machine holds only "
                f"{smallest_capacity} for {self.model.name}"
            )
        self.first_token = np.full(n, np.nan)
        self.completion = np.full(n, np.nan)
        self.token_node_of = [0] * n
        self.prompt_node_of = [0] * n
        self.events: list[tuple[float, int, int, int, int]] = []
        self.sequence = itertools.count()
        self.now = 0.0
        for index, arrival in enumerate(requests.arrival_s.tolist()):
            self._push(arrival, _ARRIVAL, index)

    def advance(self, until_s: float) -> bool:
        """Process every event at or before ``until_s``; True while later events remain.

        The machines' state then is the cluster's at ``until_s`` (``now`` moves there) except that a
        decode stretch's ``iterations`` and ``busy_s`` are only brought up to date at its next event.
        """
        events = self.events
        pop = heapq.heappop
        nodes = self.nodes
        while events and events[0][0] <= until_s:
            time, _, kind, subject, version = pop(events)
            self.now = time
            if kind == _ARRIVAL:
                self._arrive(subject)
            elif kind == _JOIN:
                self._join(subject)
            else:
                node = nodes[subject]
                if version == node.version:
                    self._boundary(node)
        if events:
            self.now = max(self.now, until_s)
            return True
        return False

    def result(self) -> RequestTimes:
        """Every request's times so far (NaN for those not yet at their first token or completion)."""
        requests = self.requests
        return RequestTimes(
            requests.arrival_s,
            self.first_token,
            self.completion,
            requests.prompt_tokens,
            requests.output_tokens,
        )

    def record_phases(self) -> None:
        """Start filling :attr:`phase_log` (the caller empties it as it reads; every machine starts idle)."""
        self.phase_log = [(self.now, node.index, PHASE_IDLE, 0, 0) for node in self.nodes]

    def set_slowdown(self, machine: int, *, prompt: float | Callable[[int], float], token: float) -> None:
        """Scale one machine's iteration times from now on (a clock lock or power cap on its GPUs).

        ``prompt`` multiplies iterations with prompts, or maps their prompt tokens to the multiplier
        (it must return finite values >= 1); ``token`` multiplies decode iterations. An iteration with
        prompts already running keeps its price; a decode stretch is cut at its next iteration boundary
        and re-priced, so the new speed applies within one iteration.
        """
        fixed = [token] if callable(prompt) else [prompt, token]
        if not all(value >= 1.0 and math.isfinite(value) for value in fixed):
            raise ConfigError(f"slowdowns are finite multipliers >= 1, got prompt={prompt!r} token={token!r}")
        node = self.nodes[machine]
        if node.prompt_slowdown == prompt and node.token_slowdown == token:
            return
        node.prompt_slowdown, node.token_slowdown = prompt, token
        if node.finish and not node.prompt_busy:
            self._wake(node)

    @property
    def running(self) -> bool:
        """Events remain after :meth:`start` (requests still to arrive or to finish)."""
        return bool(self.events)

    def snapshot(self) -> ClusterSnapshot:
        """Every machine's state at ``now``; the simulator's internals stay its own."""
        return ClusterSnapshot(
            now_s=self.now,
            machines=tuple(self._machine_snapshot(node) for node in self.nodes),
            running=self.running,
        )

    def _machine_snapshot(self, node: MachineState) -> MachineSnapshot:
        busy_s = node.busy_s
        # A decode stretch books its iterations only at its next event: count the stretch so far.
        if node.finish and not node.prompt_busy and node.iteration_s > 0:
            busy_s += max(self.now - node.stretch_start_s, 0.0)
        return MachineSnapshot(
            index=node.index,
            home_role=node.role,
            role=node.pool,
            queued_prompts=len(node.prompt_queue),
            queued_decodes=len(node.join_queue),
            pending_prompt_tokens=node.pending_prompt_tokens,
            pending_decode_tokens=node.pending_decode_tokens,
            decoding=len(node.finish),
            kv_used_tokens=node.kv_used,
            kv_capacity_tokens=node.kv_capacity,
            busy=node.prompt_busy or bool(node.finish),
            busy_s=busy_s,
            served_requests=node.served,
        )

    def _push(self, time: float, kind: int, subject: int, version: int = 0) -> None:
        heapq.heappush(self.events, (time, next(self.sequence), kind, subject, version))

    # ---- routing ---------------------------------------------------------------------------------

    def _arrive(self, request: int) -> None:
        prompt_node, token_node = self.router.route(self, self.prompt[request], self.output[request])
        prompt, output = self.prompt[request], self.output[request]
        self.prompt_node_of[request] = prompt_node.index
        self.token_node_of[request] = token_node.index
        prompt_node.pending_prompt_tokens += prompt
        token_node.unfinished += 1
        token_node.pending_decode_tokens += output
        token_node.reserved_tokens += prompt + output
        if prompt_node is not token_node:
            prompt_node.reserved_tokens += prompt + 1  # until its KV cache has left
        prompt_node.prompt_queue.append(request)
        # A prompt too big to share an iteration with the running decodes waits for the decode run to end
        # (its first completion) instead of cutting it, unless its own decode is chained here too.
        fits = prompt <= self.config.max_batch_tokens
        self._wake(prompt_node, cut=fits or prompt_node is token_node)

    def borrow(self, node: MachineState) -> MachineState:
        """Move a machine into the mixed pool (routers call this); it returns home when idle."""
        self.pools[node.pool].remove(node)
        node.pool = "mixed"
        self.pools["mixed"].append(node)
        return node

    def _return_home(self, node: MachineState) -> None:
        if node.pool == "mixed" and node.role != "mixed":
            self.pools["mixed"].remove(node)
            node.pool = node.role
            self.pools[node.role].append(node)

    # ---- batching --------------------------------------------------------------------------------

    def _kv_charge(self, request: int, node: MachineState) -> int:
        """KV a prompt holds on its prompt machine: all of it if it decodes there, else until it left."""
        decodes_here = self.token_node_of[request] == node.index
        return self.prompt[request] + (self.output[request] if decodes_here else 1)

    def _take_prompts(self, node: MachineState, token_budget: int, *, first_always: bool = True) -> list[int]:
        batch: list[int] = []
        tokens = 0
        queue = node.prompt_queue
        while queue and len(batch) < self.config.max_batch_requests:
            request = queue[0]
            size = self.prompt[request]
            # The first prompt of a batch goes whatever its size, unless starving decodes hold the budget.
            if (batch or not first_always) and tokens + size > token_budget:
                break
            charge = self._kv_charge(request, node)
            if batch and node.kv_used + charge > node.kv_capacity:
                break
            batch.append(queue.popleft())
            tokens += size
            node.kv_used += charge
        return batch

    def _transfer_s(self, request: int, source: MachineState, target: MachineState) -> float:
        size = float(self.kv_bytes_per_token * self.prompt[request])
        rate = self.config.transfer_bytes_per_s or (
            min(source.link_bytes_per_s, target.link_bytes_per_s) * source.perf.tensor_parallel
        )
        if self.config.transfer == "layerwise" and self.prompt[request] >= self.config.layerwise_min_prompt:
            size /= self.model.layers  # the other layers moved while the prefill ran
        return size / rate

    # ---- token and mixed machines ----------------------------------------------------------------

    def _join(self, request: int) -> None:
        source = self.nodes[self.prompt_node_of[request]]
        source.kv_used -= self.prompt[request] + 1
        source.reserved_tokens -= self.prompt[request] + 1
        node = self.nodes[self.token_node_of[request]]
        node.join_queue.append(request)
        self._wake(node)

    def _wake(self, node: MachineState, *, cut: bool = True) -> None:
        """Make the node act at its next iteration boundary (now, if it is idle); without ``cut`` a
        running decode stretch goes on to its next completion first."""
        if not node.finish and not node.prompt_busy:
            self._boundary(node)
            return
        if node.boundary_pending or node.prompt_busy or not cut:
            return
        elapsed = self.now - node.stretch_start_s
        done = math.floor(elapsed / node.iteration_s + 1e-9) if node.iteration_s > 0 else 0
        boundary = node.stretch_start_s + (done + 1) * node.iteration_s
        node.boundary_pending = True
        self._push(boundary, _BOUNDARY, node.index, node.version)

    def _advance(self, node: MachineState) -> None:
        """Bring the decode stretch up to now: count iterations, finish requests whose last token is out."""
        if node.finish and node.iteration_s > 0:
            done = round((self.now - node.stretch_start_s) / node.iteration_s)
            node.iterations = node.stretch_start_iteration + done
            node.busy_s += done * node.iteration_s
        while node.decoding and node.decoding[0][0] <= node.iterations:
            finish, request = heapq.heappop(node.decoding)
            if node.finish.get(request) != finish:
                continue
            del node.finish[request]
            node.sat_out.pop(request, None)
            self.completion[request] = self.now
            node.served += 1
            node.unfinished -= 1
            node.kv_used -= self.prompt[request] + self.output[request]
            node.pending_decode_tokens -= self.output[request]
            node.reserved_tokens -= self.prompt[request] + self.output[request]

    def _boundary(self, node: MachineState) -> None:
        if node.prompt_busy:  # a mixed iteration just ended
            node.prompt_busy = False
            node.iterations += 1
            for request in node.current_batch:
                self.first_token[request] = self.now
                node.pending_prompt_tokens -= self.prompt[request]
                token_node = self.nodes[self.token_node_of[request]]
                if self.output[request] == 1:
                    self.completion[request] = self.now
                    node.served += 1
                    node.kv_used -= self._kv_charge(request, node)
                    token_node.unfinished -= 1
                    token_node.pending_decode_tokens -= 1
                    token_node.reserved_tokens -= self.prompt[request] + 1
                    if token_node is not node:
                        node.reserved_tokens -= self.prompt[request] + 1
                elif token_node is node:
                    self._start_decoding(node, request, node.iterations + self.output[request] - 1)
                else:
                    self._push(self.now + self._transfer_s(request, node, token_node), _JOIN, request)
            node.current_batch = []
            node.stretch_start_s, node.stretch_start_iteration = self.now, node.iterations
            self._advance(node)
        else:
            self._advance(node)
        self._admit(node)
        if node.prompt_queue:
            starving = self._starving(node)
            budget = self.config.max_batch_tokens - len(starving)
            batch = self._take_prompts(node, budget, first_always=not starving) if budget > 0 else []
            if batch:
                self._start_mixed_iteration(node, batch, starving)
                return
        self._start_stretch(node)

    def _starving(self, node: MachineState) -> list[int]:
        cap = self.config.max_preemptions
        if cap is None or not node.sat_out:
            return []
        return [r for r in node.decode_order if r in node.finish and node.sat_out.get(r, 0) >= cap]

    def _admit(self, node: MachineState) -> None:
        while node.join_queue and len(node.finish) < self.config.max_batch_requests:
            request = node.join_queue[0]
            need = self.prompt[request] + self.output[request]
            if node.kv_used + need > node.kv_capacity:
                break
            node.join_queue.popleft()
            node.kv_used += need
            # The prompt machine produced the first token; each iteration here produces one more.
            self._start_decoding(node, request, node.iterations + self.output[request] - 1)

    @staticmethod
    def _start_decoding(node: MachineState, request: int, finish: int) -> None:
        node.finish[request] = finish
        node.decode_order.append(request)
        if len(node.decode_order) > 2 * len(node.finish) + 64:
            # Finished requests leave the order only at mixed iterations; drop them now and then.
            node.decode_order = [r for r in node.decode_order if r in node.finish]
        heapq.heappush(node.decoding, (finish, request))

    def _start_mixed_iteration(self, node: MachineState, batch: list[int], starving: list[int]) -> None:
        tokens = sum(self.prompt[r] for r in batch)
        # Decodes fill what the prompts leave of the batch's token budget (one token each); the others
        # sit this iteration out, so their last token comes one iteration later. Starving decodes (over
        # the preemption cap) were counted in the budget before the prompts were taken.
        first = set(starving)
        order = starving + [r for r in node.decode_order if r in node.finish and r not in first]
        room = max(self.config.max_batch_tokens - tokens, len(starving))
        room = min(room, self.config.max_batch_requests - len(batch))
        riding, waiting = order[:room], order[room:]
        for request in waiting:
            node.finish[request] += 1
            heapq.heappush(node.decoding, (node.finish[request], request))
            if self.config.max_preemptions is not None:
                node.sat_out[request] = node.sat_out.get(request, 0) + 1
        for request in riding:
            node.sat_out.pop(request, None)
        node.decode_order = waiting + riding
        decodes = len(riding)
        slowdown = node.prompt_slowdown
        duration = (slowdown(tokens) if callable(slowdown) else slowdown) * node.perf.iteration_time_s(
            tokens, decodes, prompt_requests=len(batch), context_tokens=node.kv_used if decodes else None
        )
        if self.phase_log is not None:
            self.phase_log.append((self.now, node.index, PHASE_PREFILL, tokens, len(batch) + decodes))
        node.prompt_busy = True
        node.current_batch = batch
        node.busy_s += duration
        node.version += 1
        node.boundary_pending = True
        self._push(self.now + duration, _BOUNDARY, node.index, node.version)

    def _start_stretch(self, node: MachineState) -> None:
        node.sat_out.clear()  # every decode rides a decode-only stretch
        node.version += 1
        node.boundary_pending = False
        node.stretch_start_s, node.stretch_start_iteration = self.now, node.iterations
        while node.decoding and node.finish.get(node.decoding[0][1]) != node.decoding[0][0]:
            heapq.heappop(node.decoding)  # stale entries must not decide when the next completion is
        if not node.finish:
            node.iteration_s = 0.0
            if self.phase_log is not None:
                self.phase_log.append((self.now, node.index, PHASE_IDLE, 0, 0))
            if not node.prompt_queue and not node.join_queue:
                self._return_home(node)
            return
        batch = len(node.finish)
        node.iteration_s = node.token_slowdown * node.perf.token_time_s(batch, node.kv_used)
        if self.phase_log is not None:
            self.phase_log.append((self.now, node.index, PHASE_DECODE, 0, batch))
        finish = node.decoding[0][0]
        self._push(
            self.now + (finish - node.iterations) * node.iteration_s, _COMPLETION, node.index, node.version
        )

    # ---- reporting -------------------------------------------------------------------------------

    def utilisation(self, horizon_s: float) -> dict[str, float]:
        out: dict[str, list[float]] = {}
        for node in self.nodes:
            out.setdefault(node.role, []).append(min(node.busy_s / horizon_s, 1.0) if horizon_s > 0 else 0.0)
        return {role: float(np.mean(values)) for role, values in out.items()}


@dataclass(frozen=True)
class RunSummary:
    requests: int
    completed: int
    throughput_rps: float | None
    """Completions per second in the middle 80 % of the arrival period (None for a single instant)."""


def run_summary(times: RequestTimes) -> RunSummary:
    """Completed requests and throughput: completions per second in the middle 80 % of the arrival
    period, leaving out the warm-up and the drain after the last arrival (for a cluster that keeps up it
    equals the offered rate)."""
    finished = np.isfinite(times.completion_s)
    start, end = float(times.arrival_s.min()), float(times.arrival_s.max())
    low, high = start + 0.1 * (end - start), start + 0.9 * (end - start)
    inside = (times.completion_s >= low) & (times.completion_s < high)
    return RunSummary(
        requests=int(times.arrival_s.size),
        completed=int(finished.sum()),
        throughput_rps=float(inside.sum() / (high - low)) if high > low else None,
    )
