"""A row of LLM inference servers under one power budget, on the Splitwise engine, with a controller.

:class:`RowSimulator` drives one :class:`~strato.llm.engine.ClusterSimulator` per priority class step by
step (``start``/``advance``/``result``) and turns the engine's phase log (what each machine starts doing,
and when) into row power with a :class:`~strato.power.model.PowerModel`: exact averages over 10 Hz bins
(every machine's power is piecewise constant between its log entries and the controller's actions, so the
bins integrate it exactly rather than sample it). Every ``telemetry_s`` the controller sees the row's mean
power over the last interval; its actions take effect after their channel's delay (out-of-band 40 s, brake
5 s), change the GPUs' clocks or caps, and through :meth:`PowerModel.slowdown` the engine's iteration times.

Priority classes are by server: a share of the row's servers is low priority and serves the low-priority
stream; clocks are set per server (per GPU in the hardware, all of a server's GPUs together here, since a
tensor-parallel model runs at its slowest GPU's pace), so a class maps onto the servers that run it.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

from strato.errors import ConfigError
from strato.llm.catalog import get_model
from strato.llm.designs import Design, make_design
from strato.llm.engine import ClusterSimulator, SchedulerConfig
from strato.llm.metrics import Percentiles, RequestTimes
from strato.llm.perf import load_perf_model
from strato.power.catalog import power_model
from strato.power.controllers import Action, PowerController, RowInfo, RowObservation
from strato.power.model import DECODE, IDLE, PREFILL, PowerModel
from strato.traces.gpu_power import largest_rise as trace_rise
from strato.traces.llm import LlmRequests
from strato.traces.llm.diurnal import diurnal

FloatArray = NDArray[np.float64]
CLASSES = ("high", "low")


@dataclass(frozen=True)
class RowSpec:
    """The row's hardware, budget and control infrastructure."""

    servers: int = 52
    budget_servers: int = 40
    """The row the budget was provisioned for; ``servers - budget_servers`` were added under it."""
    budget_w: float | None = None
    """Row power budget; None: ``budget_servers`` times the server's rated power (its nameplate)."""
    design: str = "baseline-a100"
    """An engine design whose machines all have one type; each class is that design at its size."""
    prompt_share: float = 0.6
    """For Splitwise designs: the share of each class's servers in the prompt pool."""
    model: str = "llama2-70b"
    low_priority_share: float = 0.5
    telemetry_s: float = 2.0
    actuation_delay_s: float = 40.0
    brake_delay_s: float = 5.0
    brake_mhz: float = 288.0
    sample_hz: float = 10.0

    def __post_init__(self) -> None:
        if self.servers < 1 or self.budget_servers < 1:
            raise ConfigError(
                f"a row needs servers: got {self.servers} servers, budget for {self.budget_servers}"
            )
        if not 0 <= self.low_priority_share <= 1:
            raise ConfigError(f"low-priority share must be in [0, 1], got {self.low_priority_share!r}")
        for name in ("telemetry_s", "sample_hz"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("actuation_delay_s", "brake_delay_s"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a finite, non-negative delay, got {getattr(self, name)!r}")
        if not 0 < self.prompt_share < 1:
            raise ConfigError(f"prompt share must be in (0, 1), got {self.prompt_share!r}")
        samples = self.telemetry_s * self.sample_hz
        if samples < 1 or abs(samples - round(samples)) > 1e-6:
            raise ConfigError(
                f"the telemetry interval ({self.telemetry_s:g} s) must be a whole number of "
                f"{1 / self.sample_hz:g} s power samples"
            )

    @property
    def class_sizes(self) -> dict[str, int]:
        low = math.floor(self.servers * self.low_priority_share + 0.5)  # halves round up, not to even
        return {"high": self.servers - low, "low": low}


@dataclass(frozen=True)
class RowWorkload:
    """A diurnal stream per class: ``peak_rps_per_server`` times the class's servers at the day's peak."""

    base: LlmRequests
    peak_rps_per_server: float
    duration_s: float = 86_400.0
    start_day: int = 0
    start_s: float = 0.0
    seed: int = 0

    def requests(self, servers: int, class_index: int) -> LlmRequests:
        return diurnal(
            self.base,
            self.peak_rps_per_server * servers,
            self.duration_s,
            start_day=self.start_day,
            start_s=self.start_s,
            seed=self.seed * 1009 + class_index,
            name=f"{self.base.name}@diurnal {CLASSES[class_index]}",
        )


@dataclass(frozen=True)
class ClassLatency:
    requests: int
    completed: int
    ttft_s: Percentiles
    e2e_s: Percentiles

    @classmethod
    def of(cls, times: RequestTimes) -> ClassLatency:
        done = np.isfinite(times.completion_s)
        return cls(
            requests=int(times.arrival_s.size),
            completed=int(done.sum()),
            ttft_s=Percentiles.of(times.ttft_s[done]),
            e2e_s=Percentiles.of(times.e2e_s[done]),
        )


@dataclass(frozen=True)
class AppliedAction:
    """An action as it landed, and the row's settings right after it (for plots and Ganglia)."""

    time_s: float
    decided_s: float
    action: str
    high_lock_mhz: float | None = None
    """The high-priority servers' locked clock after the action (None: unknown, e.g. trace mode)."""
    low_lock_mhz: float | None = None
    brake: bool | None = None


@dataclass(frozen=True)
class RowRun:
    """One controller's day on one row: power, control and latency."""

    controller: str
    servers: int
    budget_servers: int
    budget_w: float
    provisioned_w: float
    """``budget_servers`` times the rated server power (what "% of provisioned" refers to)."""
    sample_s: float
    power_w: FloatArray = field(repr=False)
    """Row power, mean over each ``sample_s`` bin from 0."""
    telemetry_w: FloatArray = field(repr=False)
    """What the controller saw, one value per telemetry interval."""
    telemetry_s: float
    actions: tuple[AppliedAction, ...]
    brake_events: int
    latency: dict[str, ClassLatency]
    times: dict[str, RequestTimes] = field(repr=False)
    simulation_s: float
    notes: tuple[str, ...] = ()

    @property
    def peak_w(self) -> float:
        return float(self.power_w.max()) if self.power_w.size else 0.0

    @property
    def energy_kwh(self) -> float:
        return float(self.power_w.sum() * self.sample_s / 3.6e6)

    def time_above(self, share: float) -> float:
        """Seconds the 10 Hz row power spent above ``share`` of the budget."""
        return float((self.power_w > share * self.budget_w).sum() * self.sample_s)

    def largest_rise(self, window_s: float = 40.0, reference_w: float | None = None) -> float:
        """The largest rise of row power within ``window_s`` (max minus the earlier min), as a share of
        ``reference_w`` (default the provisioned power): POLCA's "largest spike in 40 s"."""
        return largest_rise(self.power_w, self.sample_s, window_s) / (reference_w or self.provisioned_w)


def largest_rise(power: FloatArray, sample_s: float, window_s: float) -> float:
    """max over t of power(t) - min(power over [t - window, t]) for a series sampled every ``sample_s``
    (the same measure :func:`strato.traces.gpu_power.largest_rise` takes of recorded traces)."""
    if power.size < 2:
        return 0.0
    return trace_rise(np.arange(power.size, dtype=np.float64) * sample_s, power, window_s).rise_w


class RowMeter:
    """Row power from phase logs: per-node carried state, exact energy per bin.

    Each bin holds the GPUs' energy (plus every server's idle rest-of-server power) exactly, and the
    server-seconds of GPU activity; the rest of each server follows that activity through a first-order
    lag (:attr:`ServerShape.rest_lag_s`), applied to whole bins as they complete.
    """

    def __init__(self, model: PowerModel, nodes: int, sample_s: float) -> None:
        self.model = model
        self.sample_s = sample_s
        self.kind = np.full(nodes, IDLE, dtype=np.int64)
        self.load = np.zeros(nodes)
        self.energy = np.zeros(1024)
        self.busy = np.zeros(1024)
        self.rest = np.zeros(1024)
        """Busy servers as the rest-of-server power sees them (lagged), per settled bin."""
        self.settled = 0
        self.lagged_busy = 0.0
        self.gpus = model.server.gpus
        lag = model.server.rest_lag_s
        self.alpha = 1.0 if lag == 0 else 1.0 - math.exp(-sample_s / lag)

    def _grow(self, bins: int) -> None:
        if bins > self.energy.size:
            size = max(bins, 2 * self.energy.size)
            for name in ("energy", "busy", "rest"):
                grown = np.zeros(size)
                old = getattr(self, name)
                grown[: old.size] = old
                setattr(self, name, grown)

    def add(
        self, t0: float, t1: float, entries: NDArray[np.float64], locked: FloatArray, cap: FloatArray
    ) -> None:
        """Account ``[t0, t1)``: ``entries`` rows are (time, node, kind, prompt_tokens, batch)."""
        if t1 <= t0:
            return
        n = self.kind.size
        nodes = np.arange(n)
        if entries.size:
            times = np.concatenate([np.full(n, t0), entries[:, 0]])
            who = np.concatenate([nodes, entries[:, 1].astype(np.int64)])
            kind = np.concatenate([self.kind, entries[:, 2].astype(np.int64)])
            load = np.concatenate(
                [self.load, np.where(entries[:, 2] == PREFILL, entries[:, 3], entries[:, 4])]
            )
            order = np.lexsort((times, who))
            times, who, kind, load = times[order], who[order], kind[order], load[order]
            same = np.concatenate([who[1:] == who[:-1], [False]])
            end = np.where(same, np.concatenate([times[1:], [t1]]), t1)
            last = ~same
            self.kind[who[last]] = kind[last]
            self.load[who[last]] = load[last]
        else:
            times, who, kind, load = np.full(n, t0), nodes, self.kind.copy(), self.load.copy()
            end = np.full(n, t1)
        gpu = self.model.gpu_power_w(kind, load, locked[who], cap[who])
        idle_rest = self.model.server_power_w(self.gpus * gpu, np.zeros(gpu.size))
        busy = (kind != IDLE).astype(np.float64)
        # Both signals are piecewise constant between these change points; their integrals are piecewise
        # linear, so interpolating them at the bin edges gives each bin's exact energy and busy time.
        points = np.concatenate([times, end])
        deltas = np.concatenate([np.column_stack([idle_rest, busy]), -np.column_stack([idle_rest, busy])])
        order = np.argsort(points, kind="stable")
        points, deltas = points[order], deltas[order]
        level = np.cumsum(deltas, axis=0)
        integral = np.vstack([np.zeros((1, 2)), np.cumsum(level[:-1] * np.diff(points)[:, None], axis=0)])
        first, last_bin = int(t0 // self.sample_s), math.ceil(t1 / self.sample_s)
        self._grow(last_bin + 1)
        edges = np.clip(np.arange(first, last_bin + 1) * self.sample_s, t0, t1)
        self.energy[first:last_bin] += np.diff(np.interp(edges, points, integral[:, 0]))
        self.busy[first:last_bin] += np.diff(np.interp(edges, points, integral[:, 1]))

    def _settle(self, bins: int) -> None:
        """Run the rest-of-server lag over the bins completed since the last call."""
        if bins <= self.settled:
            return
        self._grow(bins)
        busy = self.busy[self.settled : bins] / self.sample_s
        lagged, _ = lfilter(
            [self.alpha], [1.0, self.alpha - 1.0], busy, zi=[(1.0 - self.alpha) * self.lagged_busy]
        )
        self.rest[self.settled : bins] = lagged
        self.lagged_busy = float(lagged[-1])
        self.settled = bins

    def _power(self, first: int, last: int) -> FloatArray:
        self._settle(last)
        server = self.model.server
        extra = server.rest_busy_w - server.rest_idle_w
        return np.asarray(self.energy[first:last] / self.sample_s + extra * self.rest[first:last])

    def mean_w(self, t0: float, t1: float) -> float:
        """Mean row power over ``[t0, t1)``; every bin before ``t1`` must be accounted."""
        first, last = round(t0 / self.sample_s), round(t1 / self.sample_s)
        return float(self._power(first, last).mean())

    def series(self, horizon_s: float) -> FloatArray:
        return self._power(0, math.ceil(horizon_s / self.sample_s))


class _PromptSlowdown:
    """A prefill's slowdown by its prompt tokens at one clock and cap, interpolated on the power model's
    own breakpoints (a power-bound prefill loses less to a lock than a small one); plain Python, since the
    engine calls it once per iteration."""

    def __init__(self, model: PowerModel, lock_mhz: float, cap_w: float) -> None:
        grid = sorted({*model.phases.prefill_w.xs, 1.0, 1e6})
        values = model.slowdown(
            np.full(len(grid), PREFILL), np.asarray(grid, dtype=np.float64), lock_mhz, cap_w
        )
        self.xs = tuple(grid)
        self.ys = tuple(float(v) for v in values)

    def __call__(self, tokens: int) -> float:
        xs, ys = self.xs, self.ys
        i = bisect.bisect_right(xs, tokens)
        if i <= 0:
            return ys[0]
        if i >= len(xs):
            return ys[-1]
        x0, x1 = xs[i - 1], xs[i]
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (tokens - x0) / (x1 - x0)


@dataclass
class _Settings:
    """What the row's GPUs are set to now, per server."""

    lock: FloatArray
    cap: FloatArray
    brake: bool = False


class RowSimulator:
    """One day of one row under one controller (see the module docstring)."""

    def __init__(
        self,
        spec: RowSpec,
        workload: RowWorkload,
        controller: PowerController,
        *,
        config: SchedulerConfig | None = None,
        perf: str | None = None,
    ) -> None:
        self.spec = spec
        self.workload = workload
        self.controller = controller
        self.llm = get_model(spec.model)
        sizes = spec.class_sizes
        self.designs: list[tuple[str, Design]] = [
            (name, self._design(count)) for name, count in sizes.items() if count > 0
        ]
        machines = {pool.machine.name for _, design in self.designs for pool in design.pools}
        if len(machines) != 1:
            raise ConfigError(f"a row has one machine type; design {spec.design} has {sorted(machines)}")
        self.machine = next(iter(self.designs[0][1].pools)).machine
        self.power = power_model(self.machine.name, spec.model)
        self.clocks = self.power.clocks
        self.clocks.check_clock(spec.brake_mhz, "power-brake clock")
        self.perf = load_perf_model(perf, self.llm, self.machine, 8)
        self.config = config
        self._slowdowns: dict[tuple[float, float], tuple[_PromptSlowdown, float]] = {}
        self.provisioned_w = spec.budget_servers * self.power.server.rated_w
        self.budget_w = spec.budget_w if spec.budget_w is not None else self.provisioned_w
        idle_row = spec.servers * self.power.idle_server_w
        if self.budget_w <= idle_row:
            raise ConfigError(
                f"row budget {self.budget_w / 1e3:.1f} kW is not above the row's idle power "
                f"{idle_row / 1e3:.1f} kW ({spec.servers} idle {self.power.server.label})"
            )

    def row_info(self) -> RowInfo:
        """What the controller is told of this row when it is bound."""
        servers = sum(design.machines for _, design in self.designs)
        return RowInfo(
            servers=servers,
            low_priority_servers=sum(design.machines for name, design in self.designs if name == "low"),
            gpus_per_server=self.power.server.gpus,
            clocks=self.clocks,
            budget_w=self.budget_w,
            rest_busy_w=self.power.server.rest_busy_w,
            idle_row_w=servers * self.power.idle_server_w,
            actuation_delay_s=self.spec.actuation_delay_s,
        )

    def _design(self, count: int) -> Design:
        name = self.spec.design
        if name.startswith("splitwise"):
            if count < 2:
                raise ConfigError(f"a Splitwise class needs 2 servers or more, got {count}")
            prompt = min(max(round(count * self.spec.prompt_share), 1), count - 1)
            return make_design(name, prompt=prompt, token=count - prompt)
        return make_design(name, machines=count)

    def run(self, progress: Callable[[float], None] | None = None) -> RowRun:
        spec = self.spec
        started = time.perf_counter()
        sims: list[tuple[str, ClusterSimulator, int]] = []
        offset = 0
        for name, design in self.designs:
            sim = ClusterSimulator(design, self.llm, {self.machine.name: self.perf}, self.config)
            sim.start(self.workload.requests(design.machines, CLASSES.index(name)))
            sim.record_phases()
            sims.append((name, sim, offset))
            offset += design.machines
        nodes = offset
        owner = np.concatenate([np.full(sim_.design.machines, CLASSES.index(n)) for n, sim_, _ in sims])
        settings = _Settings(lock=np.full(nodes, self.clocks.max_mhz), cap=np.full(nodes, self.clocks.tdp_w))
        meter = RowMeter(self.power, nodes, 1.0 / spec.sample_hz)
        self.controller.bind(self.row_info())
        pending: list[tuple[float, int, float, Action]] = []
        sequence = itertools.count()
        applied: list[AppliedAction] = []
        brake_events = 0

        def apply(action: Action) -> None:
            nonlocal brake_events
            if action.kind == "brake":
                if action.brake and not settings.brake:
                    brake_events += 1
                settings.brake = bool(action.brake)
                chosen = np.ones(nodes, dtype=bool)
            else:
                chosen = (
                    np.ones(nodes, dtype=bool)
                    if action.target == "all"
                    else owner == CLASSES.index(action.target)
                )
                if action.kind == "lock":
                    settings.lock[chosen] = (
                        self.clocks.max_mhz if action.lock_mhz is None else action.lock_mhz
                    )
                else:
                    settings.cap[chosen] = self.clocks.tdp_w if action.cap_w is None else action.cap_w
            self._retime(sims, settings, chosen)

        for action in self.controller.initial():
            apply(action)
            applied.append(self._landed(0.0, 0.0, action, settings, owner))
        horizon = self.workload.duration_s
        telemetry: list[float] = []
        now = 0.0
        next_telemetry = spec.telemetry_s
        while True:
            running = any(sim.running for _, sim, _ in sims)
            if not running and now >= horizon and not pending:
                break
            target = next_telemetry
            if pending and pending[0][0] < target:
                target = pending[0][0]
            for _, sim, _ in sims:
                sim.advance(target)
            entries = self._drain(sims)
            meter.add(now, target, entries, self._locked(settings), settings.cap)
            now = target
            while pending and pending[0][0] <= now:
                _, _, decided, action = heapq.heappop(pending)
                apply(action)
                applied.append(self._landed(now, decided, action, settings, owner))
            if now >= next_telemetry:
                power = meter.mean_w(now - spec.telemetry_s, now)
                telemetry.append(power)
                for action in self.controller.decide(RowObservation(now, power, self.budget_w)):
                    delay = spec.brake_delay_s if action.channel == "brake" else spec.actuation_delay_s
                    heapq.heappush(pending, (now + delay, next(sequence), now, action))
                next_telemetry += spec.telemetry_s
                if progress is not None:
                    progress(min(now / horizon, 1.0))
        series = meter.series(now)
        times = {name: sim.result() for name, sim, _ in sims}
        return RowRun(
            controller=self.controller.describe(),
            servers=spec.servers,
            budget_servers=spec.budget_servers,
            budget_w=self.budget_w,
            provisioned_w=self.provisioned_w,
            sample_s=1.0 / spec.sample_hz,
            power_w=series,
            telemetry_w=np.asarray(telemetry),
            telemetry_s=spec.telemetry_s,
            actions=tuple(applied),
            brake_events=brake_events,
            latency={name: ClassLatency.of(t) for name, t in times.items()},
            times=times,
            simulation_s=time.perf_counter() - started,
            notes=self.power.notes,
        )

    @staticmethod
    def _landed(
        now: float, decided: float, action: Action, settings: _Settings, owner: NDArray[np.int64]
    ) -> AppliedAction:
        def lock(class_index: int) -> float | None:
            mine = settings.lock[owner == class_index]
            return float(mine.min()) if mine.size else None

        return AppliedAction(now, decided, action.describe(), lock(0), lock(1), settings.brake)

    def _locked(self, settings: _Settings) -> FloatArray:
        if settings.brake:
            return np.minimum(settings.lock, self.spec.brake_mhz)
        return settings.lock

    def _retime(
        self,
        sims: Sequence[tuple[str, ClusterSimulator, int]],
        settings: _Settings,
        chosen: NDArray[np.bool_],
    ) -> None:
        locked = self._locked(settings)
        for _, sim, offset in sims:
            for local in range(len(sim.nodes)):
                node = offset + local
                if not chosen[node]:
                    continue
                key = (float(locked[node]), float(settings.cap[node]))
                if key not in self._slowdowns:
                    self._slowdowns[key] = (
                        _PromptSlowdown(self.power, *key),
                        float(self.power.slowdown(DECODE, 16.0, key[0], key[1])),
                    )
                prompt, token = self._slowdowns[key]
                sim.set_slowdown(local, prompt=prompt, token=token)

    @staticmethod
    def _drain(sims: Sequence[tuple[str, ClusterSimulator, int]]) -> NDArray[np.float64]:
        parts = []
        for _, sim, offset in sims:
            log = sim.phase_log
            if log:
                sim.phase_log = []
                block = np.asarray(log, dtype=np.float64)
                block[:, 1] += offset
                parts.append(block)
        if not parts:
            return np.empty((0, 5))
        merged = np.concatenate(parts)
        return merged[np.argsort(merged[:, 0], kind="stable")]
