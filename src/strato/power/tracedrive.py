"""The trace-driven mode: a power controller over recorded GPU power, without the engine.

A row of ``servers`` DGX servers is built from recorded ``nvidia-smi`` CSVs (:func:`build_row`): each
server draws one recorded run (seeded) and a random time offset into it; its GPU ``j`` follows the run's
GPU ``j mod g`` (``g`` GPUs recorded) from that offset, cycled, so a server's GPUs stay in step as a
tensor-parallel model keeps them, while servers are out of step with each other. The rest of each server
(CPUs, NVSwitches, fans) comes from the :class:`~strato.power.model.PowerModel`'s
:class:`~strato.power.model.ServerShape`, moving from its idle to its busy level with the share of the
server's GPUs at work (a GPU counts as fully at work from the model's batch-1 decode power up).

:func:`run_trace` feeds the controller the row's mean power every ``telemetry_s`` and applies its actions
after their channel's delay (out-of-band, brake) by transforming the affected servers' recorded power
with the model's law (:func:`scale_recorded_w`). What this mode cannot show: the work does not stretch
when clocks drop (the recording's timeline is fixed), so latency impact needs the engine
(:mod:`strato.power.row`); power under a lock is the recorded power scaled, so the energy of a slowed
phase is under-counted by the time it would have stretched.

A run's landed actions record the settings after each (classes' locks, brake) as the row simulator's
do, and with its per-step controller level they are what :mod:`strato.monitor.publish_power` sends to
Ganglia (``strato power publish``).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError
from strato.power.catalog import POWER_BOUND, PREFILL_BOUND_DEMAND, power_model
from strato.power.controllers import Action, PowerController, RowInfo, RowObservation
from strato.power.experiment import THRESHOLDS
from strato.power.model import DECODE, PREFILL, Curve, PowerModel
from strato.power.row import AppliedAction, largest_rise
from strato.traces.gpu_power import GpuPowerTrace, read_nvidia_smi

FloatArray = NDArray[np.float64]

_IDENTITY = Curve((0.0, 1e6), (0.0, 1e6))


def scale_recorded_w(
    model: PowerModel,
    recorded_w: FloatArray,
    locked_mhz: FloatArray | float,
    cap_w: FloatArray | float | None = None,
) -> FloatArray:
    """What a GPU recorded drawing ``recorded_w`` would draw locked at ``locked_mhz`` under an optional
    power cap ``cap_w`` (None or inf: the default limit, TDP), by :meth:`PowerModel.gpu_power_w`'s law:
    power above idle scales as ``(f / f_max) ** exponent`` of the effective clock, the locked clock lowered
    until the demand fits the limit.

    Assumes the recorded GPU ran unlocked under its default limit (the public A100 traces did), so a
    reading is the phase's demand at ``f_max`` where it was free to reach it, and at the maximum clock and
    no cap the result is the recording. Readings at or below idle are kept (nothing to scale). Below the
    catalog's :data:`~strato.power.catalog.POWER_BOUND` share of TDP the exponent is the prefill one above
    the model's highest decode power, else the decode one (the recording does not say which phase ran).
    From that share up the GPU was held by its limit, as the catalog reads the profile's prefill there: its
    demand is :data:`~strato.power.catalog.PREFILL_BOUND_DEMAND` x TDP and it ran at the clock where that
    fits TDP (~1250 MHz on an A100), so a lock above that clock takes nothing from it. Such a reading keeps
    its share of the active power (above idle) the engine model gives that prefill at the clock and cap.
    """
    recorded = np.asarray(recorded_w, dtype=np.float64)
    tdp = model.clocks.tdp_w
    idle = model.phases.idle_w
    locked = np.broadcast_to(np.asarray(locked_mhz, dtype=np.float64), recorded.shape)
    cap = np.broadcast_to(np.asarray(np.inf if cap_w is None else cap_w, dtype=np.float64), recorded.shape)
    limit = np.minimum(cap, tdp)
    law = model.with_phases(replace(model.phases, prefill_w=_IDENTITY, decode_w=_IDENTITY))
    phase = np.where(recorded > max(model.phases.decode_w.ys), PREFILL, DECODE)
    free = law.gpu_power_w(phase, recorded, locked, limit)
    bound_demand = np.full(recorded.shape, PREFILL_BOUND_DEMAND * tdp)
    prefill = np.full(recorded.shape, PREFILL, dtype=np.int64)
    share = (law.gpu_power_w(prefill, bound_demand, locked, limit) - idle) / (tdp - idle)
    bound = np.minimum(idle + (recorded - idle) * share, np.where(np.isfinite(cap), cap, np.inf))
    scaled = np.where(recorded >= POWER_BOUND * tdp, bound, free)
    return np.where(recorded <= idle, recorded, scaled)


def load_traces(path: str | Path) -> list[GpuPowerTrace]:
    """One ``nvidia-smi`` CSV, or every ``nvidia-smi*.csv`` below a folder (sorted by path)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("nvidia-smi*.csv"))
        if not files:
            raise ConfigError(f"{path}: no nvidia-smi*.csv below it")
        return [read_nvidia_smi(f) for f in files]
    if not path.exists():
        raise ConfigError(f"{path}: no such trace file or folder")
    return [read_nvidia_smi(path)]


@dataclass(frozen=True)
class TraceRowSpec:
    """The row, its budget and its control channel (defaults as :class:`strato.power.row.RowSpec`)."""

    servers: int = 52
    budget_servers: int = 40
    budget_w: float | None = None
    """Row budget in W; None: from ``budget_from``."""
    budget_from: Literal["rated", "peak"] = "rated"
    """Without ``budget_w``: ``rated``: ``budget_servers`` times the server's rated power (as the row
    simulator provisions); ``peak``: the peak (at ``sample_hz``) of the first ``budget_servers`` servers
    of the same row with no control."""
    machine: str = "a100-80gb"
    model: str = "llama2-70b"
    low_priority_share: float = 0.5
    telemetry_s: float = 2.0
    actuation_delay_s: float = 40.0
    brake_delay_s: float = 5.0
    brake_mhz: float = 288.0
    sample_hz: float = 10.0
    duration_s: float | None = None
    """Seconds of row power; None: the longest recorded run."""
    seed: int = 0
    thresholds: tuple[float, ...] = THRESHOLDS

    def __post_init__(self) -> None:
        if self.servers < 1 or self.budget_servers < 1:
            raise ConfigError(f"a row needs servers: got {self.servers}, budget for {self.budget_servers}")
        if self.budget_from not in ("rated", "peak"):
            raise ConfigError(f"budget must come from 'rated' or 'peak', not {self.budget_from!r}")
        if self.budget_servers > self.servers and self.budget_w is None and self.budget_from == "peak":
            raise ConfigError(
                f"--budget-servers {self.budget_servers} is more than the row's {self.servers} servers"
            )
        if not 0 <= self.low_priority_share <= 1:
            raise ConfigError(f"low-priority share must be in [0, 1], got {self.low_priority_share!r}")
        if self.budget_w is not None and not self.budget_w > 0:
            raise ConfigError(f"row budget must be positive, got {self.budget_w!r} W")
        if not (self.sample_hz > 0 and self.telemetry_s > 0):
            raise ConfigError("sample rate and telemetry interval must be positive")
        bins = self.telemetry_s * self.sample_hz
        if bins < 1 or abs(bins - round(bins)) > 1e-6:
            raise ConfigError(
                f"the telemetry interval ({self.telemetry_s:g} s) must be a whole number of "
                f"{1 / self.sample_hz:g} s samples"
            )
        for name in ("actuation_delay_s", "brake_delay_s"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a finite, non-negative delay, got {getattr(self, name)!r}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ConfigError(f"duration must be positive, got {self.duration_s!r} s")


@dataclass(frozen=True)
class TraceRow:
    """Recorded per-GPU power of a row at the maximum clock: ``gpu_w[server, gpu, bin]``."""

    gpu_w: FloatArray = field(repr=False)
    rest_w: FloatArray = field(repr=False)
    """Rest-of-server power per server and bin (it does not change with the GPUs' clocks)."""
    sample_s: float
    sources: tuple[str, ...]
    server_source: tuple[int, ...]
    server_offset_s: tuple[float, ...]

    @property
    def bins(self) -> int:
        return int(self.gpu_w.shape[2])

    def power_w(self, servers: int | None = None) -> FloatArray:
        """Row power with no control, of the first ``servers`` servers (default all)."""
        n = self.gpu_w.shape[0] if servers is None else servers
        total: FloatArray = self.gpu_w[:n].sum(axis=(0, 1)) + self.rest_w[:n].sum(axis=0)
        return total


def build_row(traces: Sequence[GpuPowerTrace], spec: TraceRowSpec, model: PowerModel) -> TraceRow:
    """The row of the module docstring, seeded by ``spec.seed``."""
    if not traces:
        raise ConfigError("no traces to build a row from")
    hz = spec.sample_hz
    series = [trace.gpu_power(hz)[1] for trace in traces]  # bins x recorded GPUs, per run
    for trace, matrix in zip(traces, series, strict=True):
        if matrix.shape[0] < 2:
            raise ConfigError(f"{trace.source}: too short for a {hz:g} Hz row")
    longest = max(matrix.shape[0] for matrix in series)
    bins = longest if spec.duration_s is None else round(spec.duration_s * hz)
    rng = np.random.default_rng(spec.seed)
    gpus = model.server.gpus
    gpu_w = np.empty((spec.servers, gpus, bins))
    picks: list[int] = []
    offsets: list[float] = []
    for server in range(spec.servers):
        pick = int(rng.integers(len(series)))
        matrix = series[pick]
        offset = int(rng.integers(matrix.shape[0]))
        rows = (offset + np.arange(bins)) % matrix.shape[0]
        for j in range(gpus):
            gpu_w[server, j] = matrix[rows, j % matrix.shape[1]]
        picks.append(pick)
        offsets.append(offset / hz)
    idle = model.phases.idle_w
    working = float(model.phases.decode_w(1.0)) - idle
    busy = np.clip((gpu_w - idle) / working, 0.0, 1.0).mean(axis=1)
    shape = model.server
    rest = shape.rest_idle_w + (shape.rest_busy_w - shape.rest_idle_w) * busy
    return TraceRow(
        gpu_w=gpu_w,
        rest_w=rest,
        sample_s=1.0 / hz,
        sources=tuple(trace.source for trace in traces),
        server_source=tuple(picks),
        server_offset_s=tuple(offsets),
    )


@dataclass(frozen=True)
class TraceRun:
    """One controller over one trace-built row."""

    controller: str
    servers: int
    budget_servers: int
    budget_w: float
    budget_from: str
    provisioned_w: float
    """``budget_servers`` times the server's rated power (its nameplate)."""
    sample_s: float
    power_w: FloatArray = field(repr=False)
    """Row power at ``1 / sample_s`` Hz from 0, after the controller's actions."""
    uncontrolled_w: FloatArray = field(repr=False)
    """The same row with no control (the recording as built)."""
    telemetry_s: float
    telemetry_w: FloatArray = field(repr=False)
    """What the controller saw, one mean per telemetry interval."""
    level: NDArray[np.int64] = field(repr=False)
    """Per telemetry step, after its actions were decided: the controller's level where it has one
    (POLCA's 0..3), else 1 while any knob it asked for is in force."""
    actions: tuple[AppliedAction, ...]
    """Each action as it landed, with the classes' locks and the brake after it (the settings timeline
    :func:`strato.monitor.publish_power.settings_timeline` reads, as for an engine-simulated row)."""
    max_mhz: float
    """The GPUs' unlocked clock (what a class runs at before any lock)."""
    brake_mhz: float
    brake_events: int
    thresholds: tuple[float, ...]
    sources: tuple[str, ...]

    @property
    def peak_w(self) -> float:
        return float(self.power_w.max())

    @property
    def peak_share(self) -> float:
        return self.peak_w / self.budget_w

    @property
    def energy_kwh(self) -> float:
        return float(self.power_w.sum() * self.sample_s / 3.6e6)

    def time_above(self, share: float) -> float:
        """Seconds the row spent above ``share`` of the budget."""
        return float((self.power_w > share * self.budget_w).sum() * self.sample_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "controller": self.controller,
            "servers": self.servers,
            "budget_servers": self.budget_servers,
            "budget_w": self.budget_w,
            "budget_from": self.budget_from,
            "provisioned_w": self.provisioned_w,
            "duration_s": self.power_w.size * self.sample_s,
            "sample_s": self.sample_s,
            "telemetry_s": self.telemetry_s,
            "peak_w": self.peak_w,
            "peak_share": self.peak_share,
            "mean_share": float(self.power_w.mean() / self.budget_w),
            "uncontrolled_peak_share": float(self.uncontrolled_w.max() / self.budget_w),
            "peak_of_provisioned": self.peak_w / self.provisioned_w,
            "largest_40s_rise_of_budget": largest_rise(self.power_w, self.sample_s, 40.0) / self.budget_w,
            "time_above_s": {f"{share:.0%}": self.time_above(share) for share in self.thresholds},
            "brake_events": self.brake_events,
            "energy_kwh": self.energy_kwh,
            "actions": [
                {"time_s": a.time_s, "decided_s": a.decided_s, "action": a.action} for a in self.actions
            ],
            "sources": list(self.sources),
        }


def run_trace(
    controller: PowerController,
    traces: Sequence[GpuPowerTrace],
    spec: TraceRowSpec | None = None,
    *,
    row: TraceRow | None = None,
) -> TraceRun:
    """Run ``controller`` over the row built from ``traces`` (or a ready ``row``) under ``spec``."""
    spec = spec or TraceRowSpec()
    model = power_model(spec.machine, spec.model)
    clocks = model.clocks
    clocks.check_clock(spec.brake_mhz, "power-brake clock")
    if row is None:
        row = build_row(traces, spec, model)
    uncontrolled = row.power_w()
    if spec.budget_w is not None:
        budget, budget_from = spec.budget_w, "given"
    elif spec.budget_from == "rated":
        budget = spec.budget_servers * model.server.rated_w
        budget_from = f"{spec.budget_servers} x rated {model.server.rated_w:g} W"
    else:
        budget = float(row.power_w(spec.budget_servers).max())
        budget_from = f"peak of the first {spec.budget_servers} servers with no control"
    idle_row = spec.servers * model.idle_server_w
    if budget <= idle_row:
        raise ConfigError(
            f"row budget {budget / 1e3:.1f} kW is not above the row's idle power {idle_row / 1e3:.1f} kW"
        )
    servers = spec.servers
    low_count = round(servers * spec.low_priority_share)
    low = np.zeros(servers, dtype=bool)
    low[servers - low_count :] = True  # high-priority servers first, as the row simulator orders them
    controller.bind(
        RowInfo(
            servers=servers,
            low_priority_servers=low_count,
            gpus_per_server=model.server.gpus,
            clocks=clocks,
            budget_w=budget,
            rest_busy_w=model.server.rest_busy_w,
            idle_row_w=idle_row,
            actuation_delay_s=spec.actuation_delay_s,
        )
    )
    lock = np.full(servers, clocks.max_mhz)
    cap = np.full(servers, np.inf)
    brake = False
    brake_events = 0
    applied: list[AppliedAction] = []

    def apply(action: Action) -> None:
        nonlocal brake, brake_events
        if action.kind == "brake":
            if action.brake and not brake:
                brake_events += 1
            brake = bool(action.brake)
            return
        chosen = np.ones(servers, dtype=bool) if action.target == "all" else low == (action.target == "low")
        if action.kind == "lock":
            lock[chosen] = clocks.max_mhz if action.lock_mhz is None else action.lock_mhz
        else:
            cap[chosen] = np.inf if action.cap_w is None else action.cap_w

    def landed(time_s: float, decided_s: float, action: Action) -> AppliedAction:
        # As the row simulator records them: each class's lowest lock (None: no servers), the brake apart.
        def class_lock(mine: NDArray[np.bool_]) -> float | None:
            return float(lock[mine].min()) if mine.any() else None

        return AppliedAction(time_s, decided_s, action.describe(), class_lock(~low), class_lock(low), brake)

    for action in controller.initial():
        apply(action)
        applied.append(landed(0.0, 0.0, action))

    hz = spec.sample_hz
    per_step = round(spec.telemetry_s * hz)
    delays = {"out-of-band": spec.actuation_delay_s, "brake": spec.brake_delay_s}
    pending: list[tuple[int, int, float, Action]] = []
    order = itertools.count()
    power = np.empty(row.bins)
    telemetry: list[float] = []
    levels: list[int] = []
    rest = row.rest_w.sum(axis=0)
    now = 0
    next_step = per_step
    while now < row.bins:
        while pending and pending[0][0] <= now:
            _, _, decided, action = heapq.heappop(pending)
            apply(action)
            applied.append(landed(now / hz, decided, action))
        end = min(next_step, row.bins)
        if pending:
            end = min(end, pending[0][0])
        locked = np.minimum(lock, spec.brake_mhz) if brake else lock
        changed = (locked < clocks.max_mhz) | np.isfinite(cap)
        segment = row.gpu_w[:, :, now:end]
        gpu_sum = segment[~changed].sum(axis=(0, 1))
        if changed.any():
            scaled = scale_recorded_w(
                model, segment[changed], locked[changed][:, None, None], cap[changed][:, None, None]
            )
            gpu_sum = gpu_sum + scaled.sum(axis=(0, 1))
        power[now:end] = gpu_sum + rest[now:end]
        now = end
        if now == next_step:
            mean = float(power[now - per_step : now].mean())
            telemetry.append(mean)
            t = now / hz
            for action in controller.decide(RowObservation(t, mean, budget)):
                at = now + max(round(delays[action.channel] * hz), 0)
                heapq.heappush(pending, (at, next(order), t, action))
            level = getattr(controller, "level", None)
            in_force = bool((lock < clocks.max_mhz).any() or np.isfinite(cap).any())
            levels.append(int(level) if isinstance(level, int) else int(in_force))
            next_step += per_step
    return TraceRun(
        controller=controller.describe(),
        servers=servers,
        budget_servers=spec.budget_servers,
        budget_w=budget,
        budget_from=budget_from,
        provisioned_w=spec.budget_servers * model.server.rated_w,
        sample_s=1.0 / hz,
        power_w=power,
        uncontrolled_w=uncontrolled,
        telemetry_s=spec.telemetry_s,
        telemetry_w=np.asarray(telemetry),
        level=np.asarray(levels, dtype=np.int64),
        actions=tuple(applied),
        max_mhz=clocks.max_mhz,
        brake_mhz=spec.brake_mhz,
        brake_events=brake_events,
        thresholds=spec.thresholds,
        sources=row.sources,
    )
