"""Publish power rows (POLCA, :mod:`strato.power`) to Ganglia, one spoofed host per row.

A row is anything with a power series at its controller's telemetry interval and the settings its
controller left in force: a trace-driven run (:class:`~strato.power.tracedrive.TraceRun`,
:func:`trace_series`) or a row simulated on the engine (:class:`~strato.power.row.RowRun`,
:func:`simulated_series`); both record the settings after each landed action
(:class:`~strato.power.row.AppliedAction`), and :func:`settings_timeline` reads them for both. Both become a
:class:`RowSeries`, and :func:`publish_rows` replays any number of them against the wall clock (``speed``
row seconds per wall second), every ``interval_s`` sending each row's values at the last telemetry step
completed. Everything lands in the Ganglia group ``power``:

====================  ======  ========================================================================
metric                type    meaning
====================  ======  ========================================================================
``row_power_w``       double  row power, mean over the telemetry interval (what the controller saw)
``budget_share``      double  ``row_power_w`` over the row budget (0..1 below it)
``brake``             uint8   1 while the power brake holds every GPU at the brake clock
``low_clock_mhz``     double  clock the low-priority servers' GPUs are held at (brake included; max:
                              unlocked)
``high_clock_mhz``    double  the same for the high-priority servers
``controller_level``  uint8   the controller's level (POLCA 0..3; else 1 while a knob is in force);
                              only trace-driven rows record it
====================  ======  ========================================================================

``budget_share`` is a share, not a percentage, so a C2MS group with the rule ``budget_share > 0.8``
holds the rows above 80 % of their budget. Host names are ``<prefix>-<n>`` from 1 (``row-1``, ``row-2``
...), addresses ``<ip_prefix>.x.y`` as :func:`strato.monitor.publish_llm.machine_ips` gives them.
A value that does not exist (a class with no servers) is not sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError, UnavailableError
from strato.monitor.gmetric import GmetricSender, MetricSpec, spoof_id
from strato.monitor.publish_llm import machine_ips

if TYPE_CHECKING:
    from strato.power.row import AppliedAction, RowRun
    from strato.power.tracedrive import TraceRun

GROUP = "power"
DEFAULT_IP_PREFIX = "10.78"
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class RowSeries:
    """One row as published: one value per telemetry step, step ``k`` covering
    ``[k * telemetry_s, (k + 1) * telemetry_s)`` and its settings as they stood at its end."""

    controller: str
    budget_w: float
    telemetry_s: float
    power_w: FloatArray = field(repr=False)
    brake: NDArray[np.bool_] = field(repr=False)
    low_mhz: FloatArray = field(repr=False)
    high_mhz: FloatArray = field(repr=False)
    """Per step, each class's clock with the brake included; NaN where the class has no servers."""
    level: NDArray[np.int64] | None = field(default=None, repr=False)
    """Per step, the controller's level; None where the run did not record one."""

    def __post_init__(self) -> None:
        sizes = {self.power_w.size, self.brake.size, self.low_mhz.size, self.high_mhz.size}
        if self.level is not None:
            sizes.add(self.level.size)
        if len(sizes) != 1:
            raise ConfigError(f"a row's series must have one length each, got {sorted(sizes)}")
        if not self.power_w.size:
            raise ConfigError("a row with no telemetry step has nothing to publish")
        if not (self.budget_w > 0 and self.telemetry_s > 0):
            raise ConfigError("a row needs a positive budget and telemetry interval")

    @property
    def steps(self) -> int:
        return int(self.power_w.size)

    @property
    def span_s(self) -> float:
        return self.steps * self.telemetry_s

    def values(self, step: int) -> dict[str, float]:
        """The published values at telemetry step ``step`` (metrics with no value left out)."""
        power = float(self.power_w[step])
        values = {
            "row_power_w": power,
            "budget_share": power / self.budget_w,
            "brake": float(self.brake[step]),
            "low_clock_mhz": float(self.low_mhz[step]),
            "high_clock_mhz": float(self.high_mhz[step]),
        }
        if self.level is not None:
            values["controller_level"] = float(self.level[step])
        return {name: value for name, value in values.items() if math.isfinite(value)}


def trace_series(run: TraceRun) -> RowSeries:
    """A trace-driven run as published: its settings from the timeline of its landed actions, as an
    engine-simulated row's (:func:`simulated_series`), and its controller level per step."""
    ends = (np.arange(run.telemetry_w.size, dtype=np.float64) + 1.0) * run.telemetry_s
    brake, low, high = settings_timeline(run.actions, ends, max_mhz=run.max_mhz, brake_mhz=run.brake_mhz)
    return RowSeries(
        controller=run.controller,
        budget_w=run.budget_w,
        telemetry_s=run.telemetry_s,
        power_w=run.telemetry_w,
        brake=brake,
        low_mhz=low,
        high_mhz=high,
        level=run.level,
    )


def settings_timeline(
    actions: Sequence[AppliedAction],
    times_s: FloatArray,
    *,
    max_mhz: float,
    brake_mhz: float,
) -> tuple[NDArray[np.bool_], FloatArray, FloatArray]:
    """(brake, low clock, high clock) at each of ``times_s``, from the settings each landed action left
    (:class:`~strato.power.row.AppliedAction`): before the first one nothing is locked; an action landing
    exactly at a time counts at it (the row simulator applies actions before it reads telemetry). A class
    whose lock is None (no servers) gives NaN."""
    landed = np.asarray([a.time_s for a in actions], dtype=np.float64)
    if any(a.brake is None for a in actions):
        raise ConfigError("these actions do not record the row's settings (their brake and locks)")
    if landed.size > 1 and (np.diff(landed) < 0).any():
        raise ConfigError("landed actions must be in time order")
    index = np.searchsorted(landed, times_s, side="right") - 1

    def column(values: list[float], before: float) -> FloatArray:
        table = np.asarray([before, *values], dtype=np.float64)
        picked: FloatArray = table[index + 1]
        return picked

    brake = column([float(bool(a.brake)) for a in actions], 0.0) > 0.5
    low = column([math.nan if a.low_lock_mhz is None else a.low_lock_mhz for a in actions], max_mhz)
    high = column([math.nan if a.high_lock_mhz is None else a.high_lock_mhz for a in actions], max_mhz)
    # The brake holds every GPU at its clock on top of any lock (a lock below it stays).
    low = np.where(brake, np.minimum(low, brake_mhz), low)
    high = np.where(brake, np.minimum(high, brake_mhz), high)
    return brake, low, high


def simulated_series(run: RowRun, *, max_mhz: float, brake_mhz: float) -> RowSeries:
    """A row simulated on the engine (:class:`~strato.power.row.RowSimulator`) as published; ``max_mhz``
    is its GPUs' unlocked clock (the simulator's ``clocks.max_mhz``) and ``brake_mhz`` its spec's brake
    clock. Its controller level is not recorded, so ``controller_level`` is not published for it."""
    ends = (np.arange(run.telemetry_w.size, dtype=np.float64) + 1.0) * run.telemetry_s
    brake, low, high = settings_timeline(run.actions, ends, max_mhz=max_mhz, brake_mhz=brake_mhz)
    return RowSeries(
        controller=run.controller,
        budget_w=run.budget_w,
        telemetry_s=run.telemetry_s,
        power_w=np.asarray(run.telemetry_w, dtype=np.float64),
        brake=brake,
        low_mhz=low,
        high_mhz=high,
    )


def power_metric_specs(interval_s: float) -> dict[str, MetricSpec]:
    """The published metrics (module docstring); a value is due every ``interval_s``, so twice that is
    already late."""
    tmax = max(1, math.ceil(2 * interval_s))

    def spec(name: str, kind: str, units: str, description: str) -> MetricSpec:
        return MetricSpec(
            name, kind, units, tmax=tmax, group=GROUP, title=name.replace("_", " "), description=description
        )

    return {
        s.name: s
        for s in (
            spec("row_power_w", "double", "W", "Row power, mean over the telemetry interval"),
            spec("budget_share", "double", "fraction", "Row power as a share of the row budget"),
            spec("brake", "uint8", "", "1 while the power brake holds every GPU at the brake clock"),
            spec("low_clock_mhz", "double", "MHz", "Clock of the low-priority GPUs (brake included)"),
            spec("high_clock_mhz", "double", "MHz", "Clock of the high-priority GPUs (brake included)"),
            spec("controller_level", "uint8", "", "Controller level (POLCA 0..3; else 1 while acting)"),
        )
    }


def row_names(count: int, prefix: str = "row") -> list[str]:
    """``<prefix>-1`` ... ``<prefix>-<count>``."""
    if not prefix or ":" in prefix or any(ch.isspace() for ch in prefix):
        raise ConfigError(f"host name prefix must be non-empty, without ':' or spaces (got {prefix!r})")
    return [f"{prefix}-{k + 1}" for k in range(count)]


@dataclass(frozen=True)
class PublishedRow:
    """One row as last published: its host name, address and metric values."""

    name: str
    ip: str
    step: int
    values: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ip": self.ip, "step": self.step, **self.values}


@dataclass(frozen=True)
class PowerPublishSummary:
    ticks: int
    datagrams: int
    wall_s: float
    row_s: float
    """Row time shown by the last tick."""
    finished: bool
    """Every row's last step was sent (else the wall-clock duration ran out or it was interrupted)."""
    interrupted: bool
    rows: tuple[PublishedRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ticks": self.ticks,
            "datagrams": self.datagrams,
            "wall_s": self.wall_s,
            "row_s": self.row_s,
            "finished": self.finished,
            "interrupted": self.interrupted,
            "rows": [row.to_json() for row in self.rows],
        }


def publish_rows(
    rows: Sequence[RowSeries],
    address: str,
    *,
    speed: float = 1.0,
    interval_s: float = 1.0,
    duration_s: float | None = None,
    prefix: str = "row",
    ip_prefix: str = DEFAULT_IP_PREFIX,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PowerPublishSummary:
    """Send ``rows`` to the gmond whose UDP channel is ``address``, one spoofed host each: tick ``k`` is
    due ``k * interval_s`` wall seconds after the start and shows row time ``k * interval_s * speed``,
    i.e. each row's last telemetry step completed by then (its first one at the start; a row that has
    ended keeps its last). Stops once every row's last step was sent, after ``duration_s`` wall seconds,
    or at Ctrl-C; a late tick is sent late rather than skipped (a row's few metrics are cheap)."""
    if not rows:
        raise ConfigError("nothing to publish")
    if not speed > 0 or not interval_s > 0:
        raise ConfigError(f"speed and interval must be positive (got {speed!r}, {interval_s!r})")
    if duration_s is not None and not duration_s >= 0:
        raise ConfigError(f"duration must be zero or more wall seconds, got {duration_s!r}")
    specs = power_metric_specs(interval_s)
    names = row_names(len(rows), prefix)
    ips = machine_ips(len(rows), ip_prefix)
    spoofs = [spoof_id(ip, name) for ip, name in zip(ips, names, strict=True)]
    last_tick = None if duration_s is None else math.floor(duration_s / interval_s + 1e-9)
    end_s = max(row.span_s for row in rows)
    try:
        sender = GmetricSender(address)
    except OSError as error:
        raise ConfigError(f"cannot open a socket to gmond at {address}: {error.strerror or error}") from None
    published: list[PublishedRow] = []
    ticks = datagrams = 0
    interrupted = False
    row_s = 0.0
    start = clock()
    with sender:
        try:
            while True:
                row_s = ticks * interval_s * speed
                published = []
                for row, name, ip, spoof in zip(rows, names, ips, spoofs, strict=True):
                    completed = math.floor(row_s / row.telemetry_s + 1e-9)
                    step = min(max(completed - 1, 0), row.steps - 1)
                    values = row.values(step)
                    try:
                        datagrams += sender.send_many(
                            (specs[metric], value, spoof) for metric, value in values.items()
                        )
                    except OSError as error:
                        raise UnavailableError(
                            f"cannot send to gmond at {address}: {error.strerror or error}"
                        ) from None
                    published.append(PublishedRow(name, ip, step, values))
                ticks += 1
                if row_s >= end_s or (last_tick is not None and ticks > last_tick):
                    break
                wait = start + ticks * interval_s - clock()
                if wait > 0:
                    sleep(wait)
        except KeyboardInterrupt:
            interrupted = True
    return PowerPublishSummary(
        ticks=ticks,
        datagrams=datagrams,
        wall_s=clock() - start,
        row_s=row_s,
        finished=row_s >= end_s,
        interrupted=interrupted,
        rows=tuple(published),
    )
