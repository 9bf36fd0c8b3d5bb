"""Row power controllers: small decision objects that read row telemetry and say what to set.

A controller sees one :class:`RowObservation` per telemetry interval (the row's mean power over the last
interval against its budget) and answers with :class:`Action` s: lock a priority class's SM clocks, cap
its GPUs' power, or pull/release the power brake. It never applies them: the engine (the row simulator,
or a live loop over NVML, :mod:`strato.power.actuators`) carries them out after the delays of the channel
they travel on (out-of-band commands up to 40 s, the brake 5 s). So the same controller object runs over
the simulator, over recorded traces and on real GPUs.

Built-ins (``CONTROLLERS``; a user registers their own with :func:`register_controller`):

* ``none``: does nothing, not even brake (what an un-managed oversubscribed row would do);
* ``capping``: reactive power capping: over ``threshold`` of the budget cap every GPU so the row would
  fit, release below ``threshold - hysteresis``; brake over 100 %;
* ``static``: every GPU locked at one clock from the start; brake over 100 %;
* ``polca``: POLCA's two-threshold policy (docs/power.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from strato.core.registry import Registry
from strato.core.specs import split_spec
from strato.errors import ConfigError
from strato.power.model import GpuClocks

Target = Literal["low", "high", "all"]
Channel = Literal["out-of-band", "brake"]


@dataclass(frozen=True)
class RowInfo:
    """What a controller knows of the row it runs: bound once, before the first observation."""

    servers: int
    low_priority_servers: int
    gpus_per_server: int
    clocks: GpuClocks
    budget_w: float
    rest_busy_w: float
    """Non-GPU power of one busy server (a cap that should make the row fit leaves room for it)."""
    idle_row_w: float
    actuation_delay_s: float = 40.0
    """How long an out-of-band command takes to act (a controller waits that long before escalating)."""


@dataclass(frozen=True)
class RowObservation:
    time_s: float
    power_w: float
    """Mean row power over the last telemetry interval, as the row's meters report it."""
    budget_w: float

    @property
    def share(self) -> float:
        return self.power_w / self.budget_w


@dataclass(frozen=True)
class Action:
    """Set one knob on a priority class; ``None`` releases it (``brake``: True pulls, False releases)."""

    target: Target
    lock_mhz: float | None = None
    cap_w: float | None = None
    brake: bool | None = None
    kind: Literal["lock", "cap", "brake"] = "lock"
    channel: Channel = "out-of-band"

    @staticmethod
    def lock(target: Target, mhz: float | None) -> Action:
        return Action(target, lock_mhz=mhz, kind="lock")

    @staticmethod
    def cap(target: Target, watts: float | None) -> Action:
        return Action(target, cap_w=watts, kind="cap")

    @staticmethod
    def pull_brake(on: bool) -> Action:
        return Action("all", brake=on, kind="brake", channel="brake")

    def describe(self) -> str:
        if self.kind == "brake":
            return "power brake on" if self.brake else "power brake off"
        if self.kind == "cap":
            return f"{self.target}: cap {'off' if self.cap_w is None else f'{self.cap_w:.0f} W'}"
        return f"{self.target}: lock {'off' if self.lock_mhz is None else f'{self.lock_mhz:.0f} MHz'}"


class PowerController(ABC):
    """One row's controller; stateful (it remembers what it asked for), reset by :meth:`bind`."""

    name: str = "controller"

    def bind(self, row: RowInfo) -> None:
        """Check the parameters against the row (clocks within the GPU's range ...) and reset state."""
        self.row = row

    def initial(self) -> Sequence[Action]:
        """Settings in force from the start (applied at deployment, without delay)."""
        return ()

    @abstractmethod
    def decide(self, observation: RowObservation) -> Sequence[Action]: ...

    def describe(self) -> str:
        return self.name


class _Brake:
    """The emergency brake every managed controller keeps: over ``level`` of the budget all GPUs go to the
    minimum clock; released below ``level - hysteresis``."""

    def __init__(self, level: float, hysteresis: float) -> None:
        self.level, self.hysteresis = level, hysteresis
        self.on = False

    def step(self, share: float) -> list[Action]:
        if not self.on and share > self.level:
            self.on = True
            return [Action.pull_brake(True)]
        if self.on and share < self.level - self.hysteresis:
            self.on = False
            return [Action.pull_brake(False)]
        return []


def _share(name: str, value: float) -> float:
    if not 0 < value <= 2:
        raise ConfigError(f"{name} must be a share of the row budget in (0, 2], got {value!r}")
    return value


class NoControl(PowerController):
    name = "none"

    def decide(self, observation: RowObservation) -> Sequence[Action]:
        return ()


class ReactiveCapping(PowerController):
    """Power capping only: acts after the row has passed ``threshold``; spikes and the 40 s delay pass."""

    name = "capping"

    def __init__(self, threshold: float = 1.0, hysteresis: float = 0.05, cap_w: float | None = None) -> None:
        self.threshold = _share("capping threshold", threshold)
        if not 0 <= hysteresis < self.threshold:
            raise ConfigError(f"capping hysteresis must be in [0, threshold), got {hysteresis!r}")
        self.hysteresis = hysteresis
        self.cap_w = cap_w

    def bind(self, row: RowInfo) -> None:
        super().bind(row)
        if self.cap_w is None:
            per_gpu = (row.budget_w / row.servers - row.rest_busy_w) / row.gpus_per_server
            cap = min(max(per_gpu, 0.25 * row.clocks.tdp_w), row.clocks.tdp_w)
        else:
            cap = self.cap_w
            if not 0 < cap <= row.clocks.tdp_w:
                raise ConfigError(
                    f"power cap {cap:g} W is outside (0, {row.clocks.tdp_w:g}] W for {row.clocks.name}"
                )
        self.cap = cap
        self.capped = False
        self.brake = _Brake(1.0, self.hysteresis)

    def decide(self, observation: RowObservation) -> Sequence[Action]:
        share = observation.share
        actions = self.brake.step(share)
        if not self.capped and share > self.threshold:
            self.capped = True
            actions.append(Action.cap("all", self.cap))
        elif self.capped and share < self.threshold - self.hysteresis:
            self.capped = False
            actions.append(Action.cap("all", None))
        return actions

    def describe(self) -> str:
        return f"capping:threshold={self.threshold:g},cap={self.cap:.0f}W"


class StaticLock(PowerController):
    """Every GPU locked at one clock all the time (the simplest proactive knob)."""

    name = "static"

    def __init__(self, mhz: float = 1275.0) -> None:
        self.mhz = mhz

    def bind(self, row: RowInfo) -> None:
        super().bind(row)
        row.clocks.check_clock(self.mhz, "static lock clock")
        self.brake = _Brake(1.0, 0.05)

    def initial(self) -> Sequence[Action]:
        return (Action.lock("all", self.mhz),)

    def decide(self, observation: RowObservation) -> Sequence[Action]:
        return self.brake.step(observation.share)

    def describe(self) -> str:
        return f"static:{self.mhz:g}MHz"


class Polca(PowerController):
    """POLCA (Patel et al., ASPLOS 2024), every threshold and clock a parameter (docs/power.md).

    Levels: 0 nothing; 1 low priority at ``low1`` MHz (over ``t1``); 2 low priority at ``low2`` (over ``t2``);
    3 also high priority at ``high`` (still over ``t2`` once level 2 has had ``settle_s`` to act, by default
    the row's out-of-band actuation delay); the brake over
    ``brake``. Each level is left when the row falls ``hysteresis`` below the threshold that set it.
    """

    name = "polca"

    def __init__(
        self,
        t1: float = 0.80,
        t2: float = 0.89,
        brake: float = 1.00,
        hysteresis: float = 0.05,
        low1: float = 1275.0,
        low2: float = 1110.0,
        high: float = 1305.0,
        settle_s: float | None = None,
    ) -> None:
        for name, value in (("t1", t1), ("t2", t2), ("brake", brake)):
            _share(f"polca {name}", value)
        if not t1 < t2 < brake:
            raise ConfigError(f"polca thresholds must rise: t1 < t2 < brake, got {t1:g}, {t2:g}, {brake:g}")
        if not 0 <= hysteresis < t1:
            raise ConfigError(f"polca hysteresis must be in [0, t1), got {hysteresis!r}")
        if not low2 <= low1:
            raise ConfigError(f"polca low2 ({low2:g} MHz) must not be above low1 ({low1:g} MHz)")
        if settle_s is not None and settle_s < 0:
            raise ConfigError(f"polca settle time must not be negative, got {settle_s!r}")
        self.t1, self.t2, self.brake_level, self.hysteresis = t1, t2, brake, hysteresis
        self.low1, self.low2, self.high, self.settle_s = low1, low2, high, settle_s

    def bind(self, row: RowInfo) -> None:
        super().bind(row)
        for what, mhz in (("low1", self.low1), ("low2", self.low2), ("high", self.high)):
            row.clocks.check_clock(mhz, f"polca {what} clock")
        self.settle = row.actuation_delay_s if self.settle_s is None else self.settle_s
        self.level = 0
        self.level_since = -float("inf")
        self.brake = _Brake(self.brake_level, self.hysteresis)

    def _to(self, level: int, now: float) -> list[Action]:
        actions: list[Action] = []
        low = {0: None, 1: self.low1, 2: self.low2, 3: self.low2}[level]
        if {0: None, 1: self.low1, 2: self.low2, 3: self.low2}[self.level] != low:
            actions.append(Action.lock("low", low))
        if (self.level == 3) != (level == 3):
            actions.append(Action.lock("high", self.high if level == 3 else None))
        self.level, self.level_since = level, now
        return actions

    def decide(self, observation: RowObservation) -> Sequence[Action]:
        share, now = observation.share, observation.time_s
        actions = self.brake.step(share)
        if share > self.t2:
            if self.level < 2:
                actions += self._to(2, now)
            elif self.level == 2 and now - self.level_since >= self.settle:
                actions += self._to(3, now)
        elif share > self.t1 and self.level < 1:
            actions += self._to(1, now)
        elif self.level >= 2 and share < self.t2 - self.hysteresis:
            actions += self._to(1 if share >= self.t1 - self.hysteresis else 0, now)
        elif self.level == 1 and share < self.t1 - self.hysteresis:
            actions += self._to(0, now)
        return actions

    def describe(self) -> str:
        return (
            f"polca:t1={self.t1:g},t2={self.t2:g},brake={self.brake_level:g},hysteresis={self.hysteresis:g},"
            f"low1={self.low1:g},low2={self.low2:g},high={self.high:g}"
        )


ControllerFactory = Callable[..., PowerController]


@dataclass(frozen=True)
class ControllerPlugin:
    """A registered controller: its factory, the unit of each key it takes (``share`` of the row budget:
    0.8 or 80%; ``MHz``; ``W``; ``s``: a value is written with its unit or bare in that unit, never in
    another), and which key a bare positional value sets (``static:1110``)."""

    factory: ControllerFactory
    units: Mapping[str, str]
    positional: str | None = None


CONTROLLERS: Registry[ControllerPlugin] = Registry("power controller")
CONTROLLERS.register("none", ControllerPlugin(NoControl, {}))
CONTROLLERS.register(
    "capping",
    ControllerPlugin(
        ReactiveCapping, {"threshold": "share", "hysteresis": "share", "cap_w": "W"}, "threshold"
    ),
)
CONTROLLERS.register("static", ControllerPlugin(StaticLock, {"mhz": "MHz"}, "mhz"))
CONTROLLERS.register(
    "polca",
    ControllerPlugin(
        Polca,
        {
            "t1": "share",
            "t2": "share",
            "brake": "share",
            "hysteresis": "share",
            "low1": "MHz",
            "low2": "MHz",
            "high": "MHz",
            "settle_s": "s",
        },
    ),
)


def register_controller(
    name: str,
    factory: ControllerFactory,
    params: Mapping[str, str] | None = None,
    *,
    positional: str | None = None,
) -> None:
    """Make ``name[:key=value,...]`` build ``factory(**params)``; ``params`` maps each key it takes to its
    unit (``share``, ``MHz``, ``W`` or ``s``; the factory gets floats in that unit)."""
    if positional is not None and positional not in (params or {}):
        raise ConfigError(f"controller {name!r}: positional key {positional!r} is not one of its keys")
    CONTROLLERS.register(name, ControllerPlugin(factory, dict(params or {}), positional))


def parse_controller(text: str) -> PowerController:
    """``polca``, ``polca:t1=0.8,low1=1275``, ``static:1110``, ``capping:threshold=0.95`` ..."""
    spec = split_spec(text, what="controller")
    plugin = CONTROLLERS.get(spec.head)
    kwargs: dict[str, str] = {}
    if spec.positional is not None:
        if plugin.positional is None:
            raise ConfigError(f"controller {text!r}: {spec.head} takes no positional value")
        kwargs[plugin.positional] = spec.positional
    for key, value in spec.params.items():
        if key not in plugin.units:
            choices = ", ".join(sorted(plugin.units)) or "none"
            raise ConfigError(f"controller {text!r}: unknown key {key!r} (known: {choices})")
        kwargs[key] = value
    parsed = {key: _number(text, key, value, plugin.units[key]) for key, value in kwargs.items()}
    return plugin.factory(**parsed)


_SUFFIXES = {"MHz": ("mhz",), "W": ("w",), "s": ("s",), "share": ("%",)}


def _number(text: str, key: str, value: str, unit: str) -> float:
    """``1275MHz``/``1275`` for a clock, ``300W`` for a power, ``40s`` for a time, ``0.8``/``80%`` for a
    share; a unit that is not the key's is an error rather than a number read in the wrong unit."""
    lowered = value.strip().lower()
    number = lowered
    for suffix in _SUFFIXES[unit]:
        if lowered.endswith(suffix):
            number = lowered[: -len(suffix)].strip()
            break
    try:
        result = float(number)
    except ValueError:
        raise ConfigError(
            f"controller {text!r}: {key}={value!r} is not a number in {unit} (e.g. {key}={_EXAMPLES[unit]})"
        ) from None
    return result / 100.0 if unit == "share" and lowered.endswith("%") else result


_EXAMPLES = {"MHz": "1275MHz", "W": "300W", "s": "40s", "share": "0.8 or 80%"}
