"""Builders for small hand-made invocation sets used by the FaaS tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from strato.traces.faas.model import Invocations

S = 1_000_000
MIN = 60 * S
H = 60 * MIN


def make_invocations(per_app: Sequence[Sequence[tuple[int, int]]], horizon_us: int) -> Invocations:
    """``per_app[a]`` lists ``(arrival_us, duration_us)`` of app ``a``."""
    app, arrival, duration = [], [], []
    for index, calls in enumerate(per_app):
        for start, length in calls:
            app.append(index)
            arrival.append(start)
            duration.append(length)
    app_a = np.asarray(app, dtype=np.int64)
    arrival_a = np.asarray(arrival, dtype=np.int64)
    order = np.lexsort((arrival_a, app_a))
    return Invocations(
        app=app_a[order],
        function=app_a[order],
        arrival_us=arrival_a[order],
        duration_us=np.asarray(duration, dtype=np.int64)[order],
        n_apps=len(per_app),
        horizon_us=horizon_us,
    )
