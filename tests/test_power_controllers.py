"""Power controllers as pure decision objects: telemetry in, actions out."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from strato.errors import ConfigError, ConflictError
from strato.power.catalog import A100_CLOCKS
from strato.power.controllers import (
    CONTROLLERS,
    Action,
    PowerController,
    RowInfo,
    RowObservation,
    parse_controller,
    register_controller,
)

ROW = RowInfo(
    servers=52,
    low_priority_servers=26,
    gpus_per_server=8,
    clocks=A100_CLOCKS,
    budget_w=260_000.0,
    rest_busy_w=2500.0,
    idle_row_w=100_000.0,
    actuation_delay_s=40.0,
)


def _feed(controller: PowerController, shares: Sequence[float], step_s: float = 2.0) -> list[list[str]]:
    controller.bind(ROW)
    return [
        [
            a.describe()
            for a in controller.decide(RowObservation((i + 1) * step_s, s * ROW.budget_w, ROW.budget_w))
        ]
        for i, s in enumerate(shares)
    ]


def test_polca_locks_low_priority_first_then_high_then_releases_with_hysteresis() -> None:
    polca = parse_controller("polca")
    steps = _feed(polca, [0.70, 0.81, 0.85, 0.90] + [0.90] * 20 + [0.86, 0.83, 0.78, 0.74])
    assert steps[0] == []
    assert steps[1] == ["low: lock 1275 MHz"]
    assert steps[2] == []  # still between 80 % and 89 %
    assert steps[3] == ["low: lock 1110 MHz"]
    # High priority is touched only once the low-priority lock had its 40 s to act and power is still high.
    escalation = [i for i, s in enumerate(steps) if "high: lock 1305 MHz" in s]
    assert escalation and (escalation[0] - 3) * 2.0 >= 40.0
    tail = steps[-4:]
    assert tail[0] == []  # 86 %: above 89 - 5
    assert tail[1] == ["low: lock 1275 MHz", "high: lock off"]  # 83 %: back to level 1
    assert tail[2] == []  # 78 %: above 80 - 5
    assert tail[3] == ["low: lock off"]


def test_polca_brakes_over_the_budget_and_releases_below_95_percent() -> None:
    steps = _feed(parse_controller("polca"), [1.02, 0.97, 0.94])
    assert "power brake on" in steps[0]
    assert "power brake off" not in steps[1]
    assert "power brake off" in steps[2]


def test_none_never_acts_and_static_locks_from_the_start() -> None:
    assert all(step == [] for step in _feed(parse_controller("none"), [0.5, 1.2, 1.5]))
    assert parse_controller("polca:t1=75%,low1=1200MHz,settle_s=20s").describe().startswith("polca:t1=0.75,")
    static = parse_controller("static:1110MHz")
    static.bind(ROW)
    assert [a.describe() for a in static.initial()] == ["all: lock 1110 MHz"]


def test_capping_caps_every_gpu_so_the_row_would_fit() -> None:
    capping = parse_controller("capping")
    steps = _feed(capping, [0.9, 1.01, 0.97, 0.94])
    assert steps[0] == []
    cap = (ROW.budget_w / ROW.servers - ROW.rest_busy_w) / ROW.gpus_per_server
    assert f"all: cap {cap:.0f} W" in steps[1] and "power brake on" in steps[1]
    assert "all: cap off" in steps[3]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("polca:t1=0.9,t2=0.8", "thresholds must rise"),
        ("polca:low1=2000", "outside the a100-80gb's SM clock range"),
        ("polca:low1=1000,low2=1200", "must not be above low1"),
        ("polca:tl=0.8", "unknown key 'tl'"),
        ("polca:t1=abc", "is not a number"),
        ("polca:settle_s=40MHz", "settle_s='40MHz' is not a number in s"),
        ("polca:low1=1275W", "low1='1275W' is not a number in MHz"),
        ("capping:hysteresis=-1", "capping hysteresis must be in"),
        ("static:5000", "outside the a100-80gb's SM clock range"),
        ("capping:cap_w=900", "outside"),
        ("polka", "unknown power controller 'polka'"),
        ("polca:1", "takes no positional value"),
    ],
)
def test_bad_controller_specs_are_one_line_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_controller(spec).bind(ROW)


class _Shed(PowerController):
    """A user's controller: lock everyone at one clock whenever the row passes a share."""

    name = "shed"

    def __init__(self, above: float = 0.9) -> None:
        self.above = above

    def decide(self, observation: RowObservation) -> Sequence[Action]:
        return [Action.lock("all", 1200.0)] if observation.share > self.above else []


def test_users_register_their_own_controller() -> None:
    register_controller("shed-test", _Shed, {"above": "share"})
    try:
        controller = parse_controller("shed-test:above=0.5")
        assert _feed(controller, [0.4, 0.6]) == [[], ["all: lock 1200 MHz"]]
        with pytest.raises(ConflictError):
            register_controller("shed-test", _Shed)
    finally:
        CONTROLLERS.remove("shed-test")
    # Removing a controller removes its keys with it: the name is simply unknown again.
    with pytest.raises(ConfigError, match="unknown power controller 'shed-test'"):
        parse_controller("shed-test:above=0.5")
    with pytest.raises(ConfigError, match="positional key 'level'"):
        register_controller("shed-bad", _Shed, {"above": "share"}, positional="level")
