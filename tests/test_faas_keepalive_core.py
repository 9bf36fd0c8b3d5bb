"""The keep-alive core on its own: observations in, decisions out, with hand-computed answers."""

from __future__ import annotations

from typing import Any

import pytest

from strato.faas.keepalive_core import KeepAliveCore, MemoryBudget, Phase
from strato.faas.policies import parse_policy
from strato.faas.policies.base import NEVER, KeepAlivePolicy, Window


class Recording(KeepAlivePolicy):
    """Keeps every app for ``unload_us``; records the unloads it is told about."""

    name = "recording"

    def __init__(self, unload_us: int = NEVER) -> None:
        self.unload_us = unload_us
        self.unloads = 0

    def on_unload(self, state: Any) -> None:
        self.unloads += 1

    def decide(self, state: Any) -> Window:
        return Window(0, self.unload_us)


def test_instances_leaving_an_idle_app_shrink_its_waste_and_the_last_unloads_it_silently() -> None:
    policy = Recording()
    core = KeepAliveCore(policy)
    app = core.register(100.0)
    assert core.arrive(app, 0).outcome == "cold"
    assert core.add_instance(app, 100.0, 10).outcome == "warm"  # scale-out while busy
    decision = core.end(app, 20)
    assert decision is not None and not decision.unload_now and decision.timers == ()
    core.release(app, 100.0, 50)  # one instance crashed after 30 µs idle with both loaded
    assert core.loaded(app)
    core.release(app, 100.0, 60)  # the other after 10 µs more with one loaded
    assert not core.loaded(app)
    counters = core.counters(app, 1_000)
    assert counters.wasted_us == 40
    assert counters.wasted_mb_us == 30 * 200 + 10 * 100
    assert policy.unloads == 0, "nothing chose to unload it"
    assert core.arrive(app, 1_000).outcome == "cold"


def test_a_stale_timer_does_nothing() -> None:
    core = KeepAliveCore(parse_policy("fixed:1m"))
    app = core.register(64.0)
    core.arrive(app, 0)
    decision = core.end(app, 5)
    assert decision is not None
    (unload,) = decision.timers
    assert unload.phase == Phase.UNLOAD and unload.at_us == 5 + 60_000_000
    core.arrive(app, 100)  # the idle period ended: the timer is stale
    assert not core.fire(app, unload, unload.at_us)
    assert core.loaded(app)


def _budget_with_two_idle_apps_of_equal_rank() -> MemoryBudget:
    budget = MemoryBudget(300.0)
    for app in range(3):
        budget.add_app()
        budget.take(app, 100.0)
    budget.mark_idle(2, 1.0)
    budget.mark_idle(1, 1.0)
    return budget


def test_budget_ties_go_by_app_index_and_infeasible_requests_pop_nothing() -> None:
    assert _budget_with_two_idle_apps_of_equal_rank().victims(50.0) == [(1, 1.0)]
    budget = _budget_with_two_idle_apps_of_equal_rank()
    assert budget.victims(250.0) is None
    assert budget.victims(150.0) == [(1, 1.0), (2, 1.0)]


def test_an_app_re_ranked_while_idle_is_evicted_once_and_the_budget_holds() -> None:
    # An idle function with two instances loses one (it crashed): the core ranks it again. Its first heap
    # entry must not count too, or one eviction is counted as two and the node goes over its memory.
    core = KeepAliveCore(Recording(), capacity_mb=300.0)
    two, small, big = core.register(100.0), core.register(100.0), core.register(250.0)
    assert core.arrive(two, 0).outcome == "cold"
    assert core.add_instance(two, 100.0, 1).outcome == "warm"
    core.end(two, 2)
    core.release(two, 100.0, 3)
    assert core.arrive(small, 4).outcome == "cold"
    core.end(small, 5)
    admitted = core.arrive(big, 6)
    assert admitted.outcome == "cold" and admitted.evicted == (two, small)
    assert core.budget.used_mb == 250.0 <= core.budget.capacity_mb
    assert core.counters(two, 6).evictions == 1


def test_a_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBudget(0.0)
