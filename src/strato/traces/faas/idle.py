"""Idle-time profiles: what a keep-alive policy can observe of a workload, per application.

Everything an app does without a memory capacity follows from its *idle times* (from the end of its
last running execution to its next invocation); the fast keep-alive simulator and the characterisation
(``strato traces idle``) both start from this reduction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from strato.traces.faas.model import Invocations


@dataclass(frozen=True)
class IdleProfile:
    """Everything a keep-alive policy can observe of a workload without a capacity, per app."""

    n_apps: int
    app_invocations: NDArray[np.int64]
    gap_us: NDArray[np.int64]
    """Completed idle times of all apps, grouped by app, in time order."""
    gap_bounds: NDArray[np.int64]
    """App ``a``'s idle times are ``gap_us[gap_bounds[a]:gap_bounds[a + 1]]``."""
    tail_us: NDArray[np.int64]
    """Length of each app's idle period still open at the horizon (0 if busy then or never invoked)."""

    @classmethod
    def from_invocations(cls, invocations: Invocations) -> IdleProfile:
        app, arrival = invocations.app, invocations.arrival_us
        end = arrival + invocations.duration_us
        n_apps = invocations.n_apps
        app_invocations = np.bincount(app, minlength=n_apps).astype(np.int64)
        if arrival.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(
                n_apps,
                app_invocations,
                empty,
                np.zeros(n_apps + 1, dtype=np.int64),
                np.zeros(n_apps, dtype=np.int64),
            )
        # Shift each app into its own time band so one running maximum never crosses apps.
        band = int(max(int(end.max()), invocations.horizon_us)) + 1
        offset = app * band
        busy_until = np.maximum.accumulate(end + offset)
        first_of_app = np.ones(arrival.size, dtype=bool)
        first_of_app[1:] = app[1:] != app[:-1]
        gap = np.zeros(arrival.size, dtype=np.int64)
        gap[1:] = (arrival[1:] + offset[1:]) - busy_until[:-1]
        is_idle_gap = ~first_of_app & (gap > 0)
        gap_app = app[is_idle_gap]
        gap_bounds = np.searchsorted(gap_app, np.arange(n_apps + 1)).astype(np.int64)
        last_of_app = np.ones(arrival.size, dtype=bool)
        last_of_app[:-1] = app[:-1] != app[1:]
        tail_us = np.zeros(n_apps, dtype=np.int64)
        busy_end = busy_until[last_of_app] - offset[last_of_app]
        tail_us[app[last_of_app]] = np.maximum(invocations.horizon_us - busy_end, 0)
        return cls(n_apps, app_invocations, gap[is_idle_gap], gap_bounds, tail_us)
