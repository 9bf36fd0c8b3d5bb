"""Keep-alive simulation engines.

Two engines carry out the same policy decisions with the same semantics:

* :func:`simulate_fast` (no memory capacity): applications are independent, so everything an app does
  follows from its *idle-time series*. The invocations are reduced once to an :class:`IdleProfile`
  (vectorised: a segmented running maximum of execution ends gives the busy periods and the idle gaps),
  the policy computes all of an app's windows at once (:meth:`KeepAlivePolicy.batch_windows`), and cold
  starts and wasted memory follow from array comparisons.
* :class:`EventSimulator`: a plain per-invocation discrete-event simulation on :mod:`strato.core.kernel`
  whose timers drive the keep-alive core (:mod:`strato.faas.keepalive_core`), the same core the live
  node drives with event-loop timers. It supports a node memory capacity and any policy, including ones
  without a vectorised path, and serves as the test oracle for the fast engine.

Semantics shared by both (documented choices; the capacity rules are the core's, see its docstring):

* an application is *busy* while any of its executions runs; it goes *idle* when the last one ends, and
  the policy then returns a :class:`Window`. An invocation arriving exactly when an execution ends
  continues the busy period (no zero-length idle time);
* an invocation is a cold start iff its app is not loaded when it arrives; the first invocation of every
  app is cold; a cold start loads the app (load time is not modelled);
* wasted memory = app memory x time loaded while idle, counted up to the end of the trace (the horizon);
* under a capacity, a cold start evicts loaded idle apps, lowest :meth:`eviction_rank` first (ties: lowest
  app index). If even evicting every idle app cannot make room it is *rejected*: it evicts nothing, does
  not run, is not an invocation or a cold start to the policy or the counts, and is counted in
  ``PolicyResult.rejections`` (the live node answers it 503). A pre-warm only loads an app into free
  memory; it never evicts;
* events at the same instant run as: unload, pre-warm, arrival, execution end; then by app index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from strato.core.kernel import Kernel
from strato.core.progress import progress
from strato.faas.keepalive_core import KeepAliveCore, Phase, Timer
from strato.faas.policies.base import KeepAlivePolicy
from strato.faas.results import PolicyResult
from strato.traces.faas.idle import IdleProfile
from strato.traces.faas.model import Invocations

_BAND = 2**40
"""Kernel priority = phase x _BAND + app index: phase order first, then app order."""
_ARRIVAL, _END = int(Phase.ARRIVAL) * _BAND, int(Phase.END) * _BAND


def _loaded_us(
    idle: NDArray[np.int64], prewarm: NDArray[np.int64], unload: NDArray[np.int64]
) -> NDArray[np.int64]:
    return np.maximum(np.minimum(idle, unload) - prewarm, 0)


def simulate_fast(
    profile: IdleProfile, policy: KeepAlivePolicy, app_memory_mb: NDArray[np.float64]
) -> PolicyResult | None:
    """Vectorised simulation without a capacity; None if the policy has no batch path."""
    gaps, bounds = profile.gap_us, profile.gap_bounds
    no_history = policy.batch_windows(np.zeros(0, dtype=np.int64))
    if no_history is None:
        return None
    prewarm = np.empty(gaps.size, dtype=np.int64)
    unload = np.empty(gaps.size, dtype=np.int64)
    tail_prewarm = np.full(profile.n_apps, no_history[0][0], dtype=np.int64)
    tail_unload = np.full(profile.n_apps, no_history[1][0], dtype=np.int64)
    if getattr(policy, "history_free", False):
        windows = policy.batch_windows(gaps)
        assert windows is not None
        prewarm[:], unload[:] = windows[0][:-1], windows[1][:-1]
    else:
        for app in np.flatnonzero(np.diff(bounds)):
            lo, hi = bounds[app], bounds[app + 1]
            windows = policy.batch_windows(gaps[lo:hi])
            assert windows is not None
            prewarm[lo:hi], unload[lo:hi] = windows[0][:-1], windows[1][:-1]
            tail_prewarm[app], tail_unload[app] = windows[0][-1], windows[1][-1]
    gap_app = np.repeat(np.arange(profile.n_apps), np.diff(bounds))
    cold_gap = (gaps < prewarm) | (gaps >= unload)
    cold = (profile.app_invocations > 0).astype(np.int64)
    cold += np.bincount(gap_app[cold_gap], minlength=profile.n_apps)
    wasted = np.bincount(gap_app, weights=_loaded_us(gaps, prewarm, unload), minlength=profile.n_apps).astype(
        np.int64
    )
    # bincount sums in float64; exact while an app's total stays below 2**53 µs (285 years).
    wasted += _loaded_us(profile.tail_us, tail_prewarm, tail_unload)
    return PolicyResult(
        policy=policy.name,
        app_invocations=profile.app_invocations,
        app_cold_starts=cold,
        app_wasted_us=wasted,
        app_memory_mb=app_memory_mb,
    )


class EventSimulator:
    """Per-invocation discrete-event keep-alive simulation, with an optional memory capacity.

    The kernel's timers drive a :class:`~strato.faas.keepalive_core.KeepAliveCore`; simultaneous events
    run in :class:`~strato.faas.keepalive_core.Phase` order, then by app index."""

    def __init__(
        self,
        invocations: Invocations,
        app_memory_mb: NDArray[np.float64],
        *,
        capacity_mb: float | None = None,
        cold_start_s: float = 1.0,
    ) -> None:
        self.invocations = invocations
        self.app_memory_mb = app_memory_mb
        self.capacity_mb = capacity_mb
        self.cold_start_us = round(cold_start_s * 1e6)

    def run(self, policy: KeepAlivePolicy) -> PolicyResult:
        inv = self.invocations
        kernel = Kernel()
        core = KeepAliveCore(policy, self.capacity_mb)
        for a in range(inv.n_apps):
            core.register(float(self.app_memory_mb[a]), self.cold_start_us)
        self._kernel = kernel
        self._core = core
        # Arrivals enter the heap one at a time, in global (time, app) order, to keep it small.
        order = np.lexsort((inv.app, inv.arrival_us))
        self._arrival_app = inv.app[order].tolist()
        self._arrival_time = inv.arrival_us[order].tolist()
        self._arrival_duration = inv.duration_us[order].tolist()
        self._next_arrival = 0
        self._schedule_next_arrival()
        kernel.run(until=inv.horizon_us)
        counters = [core.counters(a, inv.horizon_us) for a in range(inv.n_apps)]
        return PolicyResult(
            policy=policy.name,
            app_invocations=np.array([c.invocations for c in counters], dtype=np.int64),
            app_cold_starts=np.array([c.cold_starts for c in counters], dtype=np.int64),
            app_wasted_us=np.array([c.wasted_us for c in counters], dtype=np.int64),
            app_memory_mb=self.app_memory_mb,
            evictions=core.evictions,
            rejections=core.rejections,
        )

    def _schedule_next_arrival(self) -> None:
        k = self._next_arrival
        if k < len(self._arrival_time):
            app = self._arrival_app[k]
            self._kernel.schedule(self._arrival_time[k], self._arrive, k, priority=_ARRIVAL + app)
            self._next_arrival += 1

    def _arrive(self, k: int) -> None:
        self._schedule_next_arrival()
        now = int(self._kernel.now)
        app = self._arrival_app[k]
        if self._core.arrive(app, now).outcome != "rejected":
            self._kernel.schedule(now + self._arrival_duration[k], self._end, app, priority=_END + app)

    def _end(self, app: int) -> None:
        decision = self._core.end(app, int(self._kernel.now))
        if decision is not None:
            for timer in decision.timers:
                self._kernel.schedule(timer.at_us, self._fire, app, timer, priority=timer.phase * _BAND + app)

    def _fire(self, app: int, timer: Timer) -> None:
        self._core.fire(app, timer, int(self._kernel.now))


def simulate(
    invocations: Invocations,
    app_memory_mb: NDArray[np.float64],
    policies: Sequence[KeepAlivePolicy],
    *,
    capacity_mb: float | None = None,
    cold_start_s: float = 1.0,
    show_progress: bool | None = None,
) -> list[PolicyResult]:
    """Run each policy, on the fast engine when it can, else on the event engine."""
    profile = IdleProfile.from_invocations(invocations) if capacity_mb is None else None
    event_engine = EventSimulator(
        invocations, app_memory_mb, capacity_mb=capacity_mb, cold_start_s=cold_start_s
    )
    results: list[PolicyResult] = []
    for policy in progress(
        policies, total=len(policies), description="keep-alive policies", enabled=show_progress
    ):
        result = simulate_fast(profile, policy, app_memory_mb) if profile is not None else None
        results.append(result if result is not None else event_engine.run(policy))
    return results
