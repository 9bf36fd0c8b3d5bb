"""The keep-alive policy interface shared by the simulators and the live platform.

A policy is a small decision object. An engine owns one *app state* per application (created by
:meth:`KeepAlivePolicy.new_state`), tells the policy what happened (an invocation arrived; an idle time
ended) and asks it what to do when the application goes idle (:meth:`KeepAlivePolicy.decide`). The answer
is a :class:`Window`: the application is unloaded when it goes idle, loaded again ``prewarm_us`` later and
kept until ``unload_us`` after going idle. A window with ``prewarm_us == 0`` keeps the app loaded from the
start of the idle period. Engines carry the decision out; policies never touch time or memory themselves.

Under a memory capacity, engines evict idle applications in the order given by
:meth:`KeepAlivePolicy.eviction_rank` (lowest first). The rank may depend on an aging ``clock`` that the
engine keeps per node: after an eviction the clock becomes the evicted app's rank (Greedy-Dual's "L").

Policies that can compute all of an application's windows at once from its idle-time series implement
:meth:`KeepAlivePolicy.batch_windows`; the fast simulator uses it and falls back to the scalar methods
otherwise. Property tests check that both paths agree exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

NEVER = np.iinfo(np.int64).max
"""An ``unload_us`` that never comes: the app stays loaded."""


@dataclass(frozen=True)
class Window:
    """When to have an idle application loaded, as offsets in µs from the start of its idle period.

    The application is loaded during ``[prewarm_us, unload_us)``; an invocation arriving in that interval
    is warm, any other is a cold start. ``prewarm_us >= unload_us`` means "do not keep it at all".
    """

    prewarm_us: int
    unload_us: int

    @property
    def empty(self) -> bool:
        return self.prewarm_us >= self.unload_us


@dataclass(frozen=True)
class AppInfo:
    """What a policy may know about an application before it runs."""

    memory_mb: float
    cold_start_us: int = 1_000_000
    """Extra latency of a cold start over a warm one (cost-aware policies such as Greedy-Dual use it)."""


def spec_name(family: str, positional: str | None = None, params: Sequence[tuple[str, str]] = ()) -> str:
    """A policy's name: its canonical spec, ``family[:positional][,key=value...]``.

    Policies pass every parameter that differs from its default and only those, in a fixed order, so two
    policies share a name exactly when they decide alike, and the name parses back into the same policy.
    """
    arguments = ([positional] if positional is not None else []) + [f"{key}={value}" for key, value in params]
    return f"{family}:{','.join(arguments)}" if arguments else family


def spec_number(value: float) -> str:
    """The shortest spelling of ``value`` that reads back as the same float (5.0 -> "5")."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


class KeepAlivePolicy(ABC):
    """Decides, per application, how long to keep it loaded and when to pre-warm it."""

    name: str = "policy"
    """The canonical spec (:func:`spec_name`): unique per behaviour, and parseable."""
    history_free: bool = False
    """True when windows never depend on what was observed, so one batch call can serve every app."""

    def new_state(self, app: AppInfo) -> Any:
        """Fresh per-application state; engines keep it and hand it back on every call."""
        return None

    def on_invocation(self, state: Any, *, cold: bool, clock: float) -> None:
        """An invocation arrived (used by frequency- and cost-aware policies)."""
        return None

    def on_idle_time(self, state: Any, idle_us: int) -> None:
        """An idle period of ``idle_us`` ended with an invocation (the policy's observation)."""
        return None

    def on_unload(self, state: Any) -> None:
        """The engine unloaded the application (expiry or eviction)."""
        return None

    @abstractmethod
    def decide(self, state: Any) -> Window:
        """The window for the idle period that starts now."""

    def eviction_rank(self, state: Any, *, clock: float, idle_since_us: int, unload_at_us: int) -> float:
        """Order of eviction under memory pressure, lowest first.

        Engines ask once, when the app becomes idle and loaded, and keep the answer until the app is used
        or unloaded again, so the rank must not drift while the app sits idle.

        The default is least-recently-used: the app idle the longest goes first. (Evicting the app whose
        keep-alive ends soonest instead would throw out exactly the busy apps with short windows.)
        """
        return float(idle_since_us)

    def batch_windows(self, idle_us: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
        """Windows for all idle periods of one application at once, or None if not supported.

        ``idle_us`` holds the application's completed idle times in order. Element ``i`` of each returned
        array (length ``len(idle_us) + 1``) is the window decided after the first ``i`` idle times were
        observed; the last one governs the idle period still open at the end of the trace. Only valid for
        policies whose decisions depend on idle times alone.
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
