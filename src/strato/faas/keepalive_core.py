"""The keep-alive core: one implementation of keep-alive semantics for every engine.

The event simulator (kernel timers) and the live node (event-loop timers) both drive a
:class:`KeepAliveCore`. The core owns no clock: engines report observations with their time in integer µs of
*policy time* ("an invocation of app ``a`` arrived at ``t``", "the last execution of ``a`` ended at ``t``",
"timer ``x`` fired at ``t``") and carry out what it answers ("unload now", "pre-warm at ``t``", "unload at
``t``", "these apps were evicted"). Inside, one :class:`AppController` per app is the state machine around
the :class:`~strato.faas.policies.base.KeepAlivePolicy`, and one :class:`MemoryBudget` holds the memory.

Semantics (the same in the simulator and the live platform):

* an app is *loaded* while it holds memory (live: while any of its instances lives, starting ones
  included); it is *busy* while any of its executions runs and *idle* from the end of the last one;
* an arrival at an unloaded app is a cold start and loads it; at a loaded app it is warm;
* **over-capacity rule**: a cold start needs the app's memory; if the free memory plus the memory of every
  loaded idle app is still too little, the invocation is *rejected* (live: HTTP 503), evicts nothing, runs
  nowhere and is invisible to the policy: it counts only as a rejection, not as an invocation or a cold
  start, and the app's idle period (and its timers) go on. Otherwise idle apps are evicted, lowest
  :meth:`~strato.faas.policies.base.KeepAlivePolicy.eviction_rank` first, until the app fits. A pre-warm
  only uses free memory: it never evicts, and is skipped when the app does not fit;
* **tie-break**: equal ranks are evicted in app registration order (the app index: the trace's app id in
  the simulator, first deployment order on the live node);
* **Greedy-Dual clock**: after each eviction the budget's clock becomes the evicted app's rank;
* wasted memory = memory held x time while the app is loaded and idle (integer µs, and MiB x µs for
  engines whose apps can hold more than one instance's memory).

Simultaneous events run in :class:`Phase` order (unload, pre-warm, arrival, execution end), then by app
index; engines whose clock can produce ties (the kernel, a fake clock in tests) order them so.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Literal

from strato.faas.policies.base import NEVER, AppInfo, KeepAlivePolicy


class Phase(IntEnum):
    """Order of events at the same instant (then app index)."""

    UNLOAD = 0
    PREWARM = 1
    ARRIVAL = 2
    END = 3


Outcome = Literal["warm", "cold", "rejected"]


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer an engine sets for an app; stale (ignored by :meth:`KeepAliveCore.fire`) once the app's
    idle period ends or the app is unloaded."""

    phase: Literal[Phase.UNLOAD, Phase.PREWARM]
    at_us: int
    token: int


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a request for memory (an arrival or one more live instance)."""

    outcome: Outcome
    evicted: tuple[int, ...] = ()
    """Apps the core evicted to make room, in eviction order; the engine stops their instances."""


@dataclass(frozen=True, slots=True)
class IdleDecision:
    """What to do when an app goes idle."""

    unload_now: bool
    """The app was loaded and is unloaded now (an empty window, or one that pre-warms later)."""
    timers: tuple[Timer, ...]


_WARM, _COLD, _REJECTED = Admission("warm"), Admission("cold"), Admission("rejected")
_NOTHING, _UNLOADED = IdleDecision(False, ()), IdleDecision(True, ())


class MemoryBudget:
    """Memory held per app and the eviction order of loaded idle apps.

    Idle loaded apps wait in a heap ranked ``(rank, app index)``. Entries go stale instead of being removed
    (an app used or unloaded since); a per-app epoch tells the live entry.
    """

    def __init__(self, capacity_mb: float = math.inf) -> None:
        if not capacity_mb > 0:
            raise ValueError("a memory capacity must be positive")
        self.capacity_mb = capacity_mb
        self.used_mb = 0.0
        self.clock = 0.0
        """Greedy-Dual's aging value L: the rank of the last evicted app."""
        self.held: list[float] = []
        self._heap: list[tuple[float, int, int]] = []
        self._idle: dict[int, int] = {}
        """Evictable apps -> the token of their live heap entry. The budget issues the tokens itself, so
        an app re-ranked while idle (an instance left it) leaves exactly one live entry behind."""
        self._tokens = 0
        self._idle_mb = 0.0

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.capacity_mb)

    def add_app(self) -> int:
        self.held.append(0.0)
        return len(self.held) - 1

    def fits_free(self, memory_mb: float) -> bool:
        return self.used_mb + memory_mb <= self.capacity_mb

    def take(self, app: int, memory_mb: float) -> None:
        self.held[app] += memory_mb
        self.used_mb += memory_mb

    def give(self, app: int, memory_mb: float) -> None:
        self.held[app] -= memory_mb
        self.used_mb -= memory_mb
        if self.held[app] <= 0.0:
            self.held[app] = 0.0

    def give_all(self, app: int) -> None:
        self.used_mb -= self.held[app]
        self.held[app] = 0.0

    def mark_idle(self, app: int, rank: float) -> None:
        self.unmark(app)
        self._tokens += 1
        heapq.heappush(self._heap, (rank, app, self._tokens))
        self._idle[app] = self._tokens
        self._idle_mb += self.held[app]

    def is_idle(self, app: int) -> bool:
        return app in self._idle

    def unmark(self, app: int) -> None:
        if self._idle.pop(app, None) is not None:
            self._idle_mb -= self.held[app]

    def victims(self, memory_mb: float) -> list[tuple[int, float]] | None:
        """The idle apps to evict, in order, so that ``memory_mb`` fits; None if even all of them are too
        little (then nothing is consumed). The caller evicts every app returned: their heap entries are
        consumed."""
        if self.fits_free(memory_mb):
            return []
        if self.used_mb - self._idle_mb + memory_mb > self.capacity_mb:
            return None
        chosen: list[tuple[int, float]] = []
        freed = 0.0
        while self.used_mb - freed + memory_mb > self.capacity_mb and self._heap:
            rank, app, token = heapq.heappop(self._heap)
            if self._idle.get(app) != token:
                continue
            chosen.append((app, rank))
            freed += self.held[app]
        return chosen


@dataclass
class _Counters:
    """An app's running totals (see :class:`AppCounters`)."""

    invocations: int = 0
    cold_starts: int = 0
    rejections: int = 0
    prewarms: int = 0
    unloads: int = 0
    evictions: int = 0
    wasted_us: int = 0
    wasted_mb_us: float = 0.0


@dataclass(frozen=True)
class AppCounters:
    """What happened to one app (:meth:`KeepAliveCore.counters`)."""

    invocations: int
    """Admitted invocations (a rejected one is not counted)."""
    cold_starts: int
    rejections: int
    prewarms: int
    unloads: int
    """Unloads the policy chose (at idle or at the end of a window); evictions are counted apart."""
    evictions: int
    wasted_us: int
    """Time loaded while idle."""
    wasted_mb_us: float
    """Memory held x time while loaded and idle (differs from ``wasted_us`` x memory only when a live
    function held several instances)."""


class AppController:
    """One app's keep-alive state machine: busy -> idle (loaded, pre-warm pending, or unloaded) -> busy."""

    __slots__ = (
        "counters",
        "epoch",
        "forgotten",
        "idle_since",
        "index",
        "memory_mb",
        "running",
        "state",
        "unload_at",
        "waste_since",
    )

    def __init__(self, index: int, memory_mb: float, state: Any) -> None:
        self.index = index
        self.memory_mb = memory_mb
        """What a load reserves (live: one instance)."""
        self.state = state
        self.running = 0
        self.idle_since = -1
        """Start of the current idle period; -1 before the first invocation."""
        self.unload_at = NEVER
        self.epoch = 0
        """Bumped when the idle period ends or the app is unloaded: older timers and heap entries go stale."""
        self.waste_since: int | None = None
        """Start of the current loaded-and-idle stretch not yet accounted."""
        self.forgotten = False
        self.counters = _Counters()


class KeepAliveCore:
    """Keep-alive of a set of apps on one node: the policy's windows, the memory budget, the accounting."""

    def __init__(self, policy: KeepAlivePolicy, capacity_mb: float | None = None) -> None:
        self.policy = policy
        self.budget = MemoryBudget(math.inf if capacity_mb is None else capacity_mb)
        self.apps: list[AppController] = []
        self.evictions = 0
        self.rejections = 0

    def register(self, memory_mb: float, cold_start_us: int = 1_000_000) -> int:
        """A new app; its index is its place in the eviction tie-break."""
        index = self.budget.add_app()
        state = self.policy.new_state(AppInfo(memory_mb, cold_start_us))
        self.apps.append(AppController(index, memory_mb, state))
        return index

    def loaded(self, app: int) -> bool:
        return self.budget.held[app] > 0.0

    # ---- observations ----------------------------------------------------------------------------

    def arrive(self, app: int, now: int) -> Admission:
        a = self.apps[app]
        if a.forgotten:
            return _REJECTED
        budget = self.budget
        cold = budget.held[app] <= 0.0
        victims: list[tuple[int, float]] = []
        if cold:
            found = budget.victims(a.memory_mb)
            if found is None:
                a.counters.rejections += 1
                self.rejections += 1
                return _REJECTED
            victims = found
        if a.running == 0:
            # Timers and heap entries exist only while the app is idle: this idle period is over.
            a.epoch += 1
            budget.unmark(app)
            if a.idle_since >= 0:
                self._account(a, now)
                a.waste_since = None
                self.policy.on_idle_time(a.state, now - a.idle_since)
        for victim, rank in victims:
            self._evict(self.apps[victim], rank, now)
        counters = a.counters
        if cold:
            counters.cold_starts += 1
            budget.take(app, a.memory_mb)
        counters.invocations += 1
        self.policy.on_invocation(a.state, cold=cold, clock=budget.clock)
        a.running += 1
        if victims:
            return Admission("cold", tuple(victim for victim, _ in victims))
        return _COLD if cold else _WARM

    def end(self, app: int, now: int) -> IdleDecision | None:
        """An execution ended; the decision when it was the app's last one running, else None."""
        a = self.apps[app]
        if a.forgotten:
            return None
        a.running -= 1
        if a.running:
            return None
        a.idle_since = now
        window = self.policy.decide(a.state)
        was_loaded = self.budget.held[app] > 0.0
        unload_now = was_loaded and (window.empty or window.prewarm_us > 0)
        a.counters.unloads += unload_now
        if window.empty:
            self._unload(a)
            return _UNLOADED if unload_now else _NOTHING
        timers: list[Timer] = []
        if window.prewarm_us > 0:
            self._unload(a)
            timers.append(Timer(Phase.PREWARM, now + window.prewarm_us, a.epoch))
        a.unload_at = NEVER if window.unload_us == NEVER else now + window.unload_us
        if window.prewarm_us == 0 and was_loaded:
            a.waste_since = now
            self._mark_idle(a)
        if window.unload_us != NEVER:
            timers.append(Timer(Phase.UNLOAD, a.unload_at, a.epoch))
        return IdleDecision(unload_now, tuple(timers))

    def fire(self, app: int, timer: Timer, now: int) -> bool:
        """A timer went off; True when it changed something (pre-warm: the app was loaded and the engine
        starts an instance; unload: the app was unloaded and the engine stops its instances)."""
        a = self.apps[app]
        if a.forgotten or timer.token != a.epoch:
            return False
        if timer.phase == Phase.PREWARM:
            if self.loaded(app) or not self.budget.fits_free(a.memory_mb):
                return False
            self.budget.take(app, a.memory_mb)
            a.counters.prewarms += 1
            a.waste_since = now
            self._mark_idle(a)
            return True
        if not self.loaded(app):
            return False
        self._account(a, now)
        a.waste_since = None
        self._unload(a)
        a.counters.unloads += 1
        return True

    # ---- live instances ----------------------------------------------------------------------------

    def add_instance(self, app: int, memory_mb: float, now: int) -> Admission:
        """Reserve one more instance's memory for a busy app (scale-out), evicting idle apps as an arrival
        would; rejected when it cannot fit. The app's own memory is never evicted for it."""
        found = None if self.apps[app].forgotten else self.budget.victims(memory_mb)
        if found is None:
            return _REJECTED
        for victim, rank in found:
            self._evict(self.apps[victim], rank, now)
        self.budget.take(app, memory_mb)
        return Admission("warm", tuple(victim for victim, _ in found))

    def release(self, app: int, memory_mb: float, now: int) -> None:
        """An instance went away outside keep-alive (it crashed, timed out, retired after an update, or
        failed to start). When it was the last one, an idle app becomes unloaded without telling the
        policy (nothing chose to unload it)."""
        a = self.apps[app]
        if a.forgotten:
            return
        self._account(a, now)
        idle = self.budget.is_idle(app)
        self.budget.unmark(app)
        self.budget.give(app, memory_mb)
        if self.loaded(app):
            if idle:
                self._mark_idle(a)
        else:
            a.waste_since = None

    def forget(self, app: int, now: int) -> None:
        """The app was removed: its memory is free and every later observation of it is ignored."""
        a = self.apps[app]
        self._account(a, now)
        a.waste_since = None
        a.epoch += 1
        self.budget.unmark(app)
        self.budget.give_all(app)
        a.forgotten = True

    def set_memory(self, app: int, memory_mb: float) -> None:
        """What the app's next load reserves (live: a new version with another memory limit)."""
        self.apps[app].memory_mb = memory_mb

    # ---- accounting --------------------------------------------------------------------------------

    def counters(self, app: int, now: int) -> AppCounters:
        """The app's counters with its wasted memory accounted up to ``now``."""
        a = self.apps[app]
        if not a.forgotten:
            self._account(a, now)
        return AppCounters(**asdict(a.counters))

    def _account(self, a: AppController, now: int) -> None:
        if a.waste_since is not None:
            span = now - a.waste_since
            a.counters.wasted_us += span
            a.counters.wasted_mb_us += span * self.budget.held[a.index]
            a.waste_since = now

    # ---- transitions -------------------------------------------------------------------------------

    def _mark_idle(self, a: AppController) -> None:
        if not self.budget.bounded:
            return  # nothing is ever evicted: spare the policy the ranking
        rank = self.policy.eviction_rank(
            a.state, clock=self.budget.clock, idle_since_us=a.idle_since, unload_at_us=a.unload_at
        )
        self.budget.mark_idle(a.index, rank)

    def _unload(self, a: AppController) -> None:
        a.epoch += 1
        self.budget.unmark(a.index)
        if self.loaded(a.index):
            self.budget.give_all(a.index)
            self.policy.on_unload(a.state)

    def _evict(self, victim: AppController, rank: float, now: int) -> None:
        self._account(victim, now)
        victim.waste_since = None
        self._unload(victim)
        victim.counters.evictions += 1
        self.evictions += 1
        self.budget.clock = rank
