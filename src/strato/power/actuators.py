"""Actuators: where a controller's :class:`~strato.power.controllers.Action` s reach GPUs, and telemetry.

An :class:`Actuator` owns a set of GPUs (by index) and sets two knobs on any subset of them: the locked
SM clock (or its reset to the driver's default) and the power limit (or its reset to the default limit).
The power brake locks every GPU it owns at the minimum clock; while it is on, lock requests are
remembered but not set, and releasing it puts back what each GPU was asked to run at. Every value is
checked against the GPU's real ranges (:class:`GpuLimits`) before anything is set: one
:class:`~strato.errors.ConfigError` naming the GPU, the value and the range.

Backends:

* :class:`SimulatedActuator` records what it set (tests, the trace-driven mode, ``--dry-run`` on a
  machine without a GPU, with limits from the catalog); with ``echo`` it prints the same lines as a dry
  run of the NVML backend;
* :class:`NvmlActuator` sets the knobs through NVML (``nvidia-ml-py``); ``dry_run=True`` reads the
  GPUs' ranges from NVML but prints each NVML call it would make, per GPU index, instead of making it.

Telemetry (:class:`Telemetry`: ``read_power_w()`` the summed power of the watched GPUs): the actuators
themselves (NVML's power reading), :class:`NvidiaSmiTelemetry` (a running ``nvidia-smi --query-gpu=
index,power.draw --format=csv,noheader,nounits -lms N``, read line by line) and :class:`ReplayTelemetry`
(a recorded ``nvidia-smi`` CSV, read with :func:`strato.traces.gpu_power.read_nvidia_smi`); each sums
only the controlled GPUs.

:func:`run_control` is the live loop: every ``telemetry_s`` it reads power, asks the controller and
applies its actions at once (the real channel's delays are the hardware's own; none are added). A power
cap under the GPUs' minimum limit is raised to it (:func:`fit_to_limits`) rather than ending the loop.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Protocol

import numpy as np

from strato.errors import ConfigError, UnavailableError
from strato.power.controllers import Action, PowerController, RowInfo, RowObservation
from strato.power.model import GpuClocks

Knob = Literal["lock", "reset-lock", "power-limit", "reset-power-limit"]


@dataclass(frozen=True)
class GpuLimits:
    """One GPU's settable ranges, as the driver reports them (or the catalog, without a GPU)."""

    index: int
    name: str
    min_mhz: float
    max_mhz: float
    min_limit_w: float
    max_limit_w: float
    default_limit_w: float
    supported_mhz: tuple[float, ...] = ()
    """The SM clocks the GPU can run (empty: any clock in ``min_mhz..max_mhz``)."""

    def check_lock(self, mhz: float) -> float:
        if not (math.isfinite(mhz) and self.min_mhz <= mhz <= self.max_mhz):
            raise ConfigError(
                f"GPU {self.index} ({self.name}): SM clock {mhz:g} MHz is outside its supported range "
                f"{self.min_mhz:g}..{self.max_mhz:g} MHz"
            )
        return float(mhz)

    def check_limit(self, watts: float) -> float:
        if not (math.isfinite(watts) and self.min_limit_w <= watts <= self.max_limit_w):
            raise ConfigError(
                f"GPU {self.index} ({self.name}): power limit {watts:g} W is outside its range "
                f"{self.min_limit_w:g}..{self.max_limit_w:g} W"
            )
        return float(watts)

    @classmethod
    def from_clocks(cls, index: int, clocks: GpuClocks, min_limit_w: float | None = None) -> GpuLimits:
        """Limits from a catalog entry: clocks as listed, power limit from a quarter of TDP up to TDP."""
        return cls(
            index=index,
            name=clocks.name,
            min_mhz=clocks.min_mhz,
            max_mhz=clocks.max_mhz,
            min_limit_w=0.25 * clocks.tdp_w if min_limit_w is None else min_limit_w,
            max_limit_w=clocks.tdp_w,
            default_limit_w=clocks.tdp_w,
        )


@dataclass(frozen=True)
class Setting:
    """One knob set on one GPU; ``value`` is MHz for a lock, W for a power limit, None for a reset."""

    gpu: int
    knob: Knob
    value: float | None

    def nvml_call(self) -> str:
        """The NVML call that makes this setting (what a dry run prints)."""
        if self.knob == "lock":
            mhz = f"{self.value:.0f}"
            return f"gpu {self.gpu}: nvmlDeviceSetGpuLockedClocks({mhz}, {mhz})  # lock SM clock at {mhz} MHz"
        if self.knob == "reset-lock":
            return f"gpu {self.gpu}: nvmlDeviceResetGpuLockedClocks()  # SM clock back to the driver's choice"
        if self.knob == "power-limit":
            assert self.value is not None
            return (
                f"gpu {self.gpu}: nvmlDeviceSetPowerManagementLimit({round(self.value * 1000)})"
                f"  # power limit {self.value:g} W"
            )
        assert self.value is not None
        return (
            f"gpu {self.gpu}: nvmlDeviceSetPowerManagementLimit({round(self.value * 1000)})"
            f"  # default power limit {self.value:g} W"
        )


class Telemetry(Protocol):
    def read_power_w(self) -> float:
        """Summed power of the watched GPUs (W): since the last read where the source can average."""
        ...


class Actuator(ABC):
    """GPUs by index, their limits, and what has been asked of them (see the module docstring)."""

    def __init__(self, limits: Sequence[GpuLimits], *, brake_mhz: float | None = None) -> None:
        if not limits:
            raise ConfigError("an actuator needs at least one GPU")
        indices = [limit.index for limit in limits]
        if len(set(indices)) != len(indices):
            raise ConfigError(f"GPU indices repeat: {indices}")
        self.limits: dict[int, GpuLimits] = {limit.index: limit for limit in limits}
        self.gpus: tuple[int, ...] = tuple(indices)
        self.requested_lock: dict[int, float | None] = dict.fromkeys(self.gpus)
        self.limit_w: dict[int, float | None] = dict.fromkeys(self.gpus)
        self.brake_on = False
        self.brake_mhz: dict[int, float] = {
            gpu: limit.min_mhz if brake_mhz is None else limit.check_lock(brake_mhz)
            for gpu, limit in self.limits.items()
        }
        self.log: list[Setting] = []

    # ---- the clocks a controller may be given -----------------------------------------------------

    def clocks(self) -> GpuClocks:
        """One :class:`GpuClocks` every owned GPU can honour (the intersection of their ranges), with the
        smallest default power limit as TDP: what :meth:`PowerController.bind` checks its clocks against."""
        low = max(limit.min_mhz for limit in self.limits.values())
        high = min(limit.max_mhz for limit in self.limits.values())
        names = sorted({limit.name for limit in self.limits.values()})
        if not low < high:
            raise ConfigError(f"the GPUs' clock ranges do not overlap ({', '.join(names)})")
        tdp = min(limit.default_limit_w for limit in self.limits.values())
        return GpuClocks("+".join(names), min_mhz=low, max_mhz=high, tdp_w=tdp)

    # ---- applying ---------------------------------------------------------------------------------

    def _own(self, gpus: Iterable[int]) -> list[int]:
        chosen = list(gpus)
        stray = [gpu for gpu in chosen if gpu not in self.limits]
        if stray:
            raise ConfigError(f"GPU {stray[0]} is not one of this actuator's GPUs {list(self.gpus)}")
        return chosen

    def apply(self, action: Action, gpus: Iterable[int]) -> tuple[Setting, ...]:
        """Carry ``action`` out on ``gpus`` (the brake always acts on every owned GPU). Every value is
        checked before the first one is set, so a bad action sets nothing."""
        chosen = self._own(gpus)
        settings: list[Setting] = []
        if action.kind == "brake":
            on = bool(action.brake)
            if on != self.brake_on:
                self.brake_on = on
                for gpu in self.gpus:
                    settings.append(self._lock_setting(gpu))
        elif action.kind == "lock":
            mhz = action.lock_mhz
            if mhz is not None:
                for gpu in chosen:
                    self.limits[gpu].check_lock(mhz)
            for gpu in chosen:
                before = self._effective_lock(gpu)
                self.requested_lock[gpu] = None if mhz is None else float(mhz)
                if self._effective_lock(gpu) != before:
                    settings.append(self._lock_setting(gpu))
        else:
            watts = action.cap_w
            if watts is not None:
                for gpu in chosen:
                    self.limits[gpu].check_limit(watts)
            for gpu in chosen:
                if self.limit_w[gpu] == watts:
                    continue
                self.limit_w[gpu] = None if watts is None else float(watts)
                if watts is None:
                    settings.append(Setting(gpu, "reset-power-limit", self.limits[gpu].default_limit_w))
                else:
                    settings.append(Setting(gpu, "power-limit", float(watts)))
        for setting in settings:
            self._set(setting)
            self.log.append(setting)
        return tuple(settings)

    def release_all(self) -> tuple[Setting, ...]:
        """Reset every knob this actuator changed (the end of a live run leaves no GPU locked)."""
        settings: list[Setting] = []
        touched_locks = {s.gpu for s in self.log if s.knob == "lock"}
        touched_limits = {s.gpu for s in self.log if s.knob == "power-limit"}
        self.brake_on = False
        for gpu in self.gpus:
            self.requested_lock[gpu] = None
            if gpu in touched_locks:
                settings.append(Setting(gpu, "reset-lock", None))
            self.limit_w[gpu] = None
            if gpu in touched_limits:
                settings.append(Setting(gpu, "reset-power-limit", self.limits[gpu].default_limit_w))
        for setting in settings:
            self._set(setting)
            self.log.append(setting)
        return tuple(settings)

    def _effective_lock(self, gpu: int) -> float | None:
        if self.brake_on:
            return self.brake_mhz[gpu]
        return self.requested_lock[gpu]

    def _lock_setting(self, gpu: int) -> Setting:
        mhz = self._effective_lock(gpu)
        return Setting(gpu, "reset-lock", None) if mhz is None else Setting(gpu, "lock", mhz)

    def locked_mhz(self, gpu: int) -> float | None:
        """The clock GPU ``gpu`` is locked at now (None: not locked)."""
        return self._effective_lock(gpu)

    @abstractmethod
    def _set(self, setting: Setting) -> None: ...

    @abstractmethod
    def read_power_w(self) -> float: ...

    def close(self) -> None:  # noqa: B027 (most backends hold nothing)
        """Free the backend (NVML's handle); the settings stay."""


class SimulatedActuator(Actuator):
    """Records what it sets; power comes from ``power_w`` (a callable, or 0 W). With ``echo`` it prints
    each setting as the NVML backend's dry run would."""

    def __init__(
        self,
        limits: Sequence[GpuLimits],
        *,
        power_w: Callable[[], float] | None = None,
        brake_mhz: float | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(limits, brake_mhz=brake_mhz)
        self._power = power_w
        self._echo = echo

    @classmethod
    def for_clocks(cls, clocks: GpuClocks, gpus: Sequence[int], **kwargs: Any) -> SimulatedActuator:
        return cls([GpuLimits.from_clocks(gpu, clocks) for gpu in gpus], **kwargs)

    def _set(self, setting: Setting) -> None:
        if self._echo is not None:
            self._echo(f"dry-run: {setting.nvml_call()}")

    def read_power_w(self) -> float:
        return float(self._power()) if self._power is not None else 0.0


def load_nvml() -> ModuleType:
    """``pynvml`` (the ``nvidia-ml-py`` package), initialised; UnavailableError when there is no GPU."""
    try:
        import pynvml
    except ImportError:
        raise UnavailableError(
            "no NVML: the nvidia-ml-py package is not installed (pip install nvidia-ml-py)"
        ) from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise UnavailableError(f"no NVIDIA GPU here: nvmlInit failed ({error})") from None
    module: ModuleType = pynvml
    return module


def _nvml_limits(nvml: ModuleType, index: int) -> GpuLimits:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else str(name)
    clocks: set[float] = set()
    for memory in nvml.nvmlDeviceGetSupportedMemoryClocks(handle):
        clocks.update(float(mhz) for mhz in nvml.nvmlDeviceGetSupportedGraphicsClocks(handle, memory))
    if not clocks:
        raise UnavailableError(f"GPU {index} ({name}) reports no supported SM clocks")
    low_mw, high_mw = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    default_mw = nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle)
    return GpuLimits(
        index=index,
        name=name,
        min_mhz=min(clocks),
        max_mhz=max(clocks),
        min_limit_w=low_mw / 1000.0,
        max_limit_w=high_mw / 1000.0,
        default_limit_w=default_mw / 1000.0,
        supported_mhz=tuple(sorted(clocks)),
    )


class NvmlActuator(Actuator):
    """The real backend: NVML through ``nvidia-ml-py``. Setting clocks and power limits needs root (or
    the driver's permission for the user); ``dry_run=True`` needs neither: it prints each call, per GPU
    index, instead of making it (to ``echo``, default stdout)."""

    def __init__(
        self,
        gpus: Sequence[int] | None = None,
        *,
        dry_run: bool = False,
        brake_mhz: float | None = None,
        echo: Callable[[str], None] = print,
        nvml: ModuleType | None = None,
    ) -> None:
        self.nvml = nvml if nvml is not None else load_nvml()
        count = int(self.nvml.nvmlDeviceGetCount())
        if count == 0:
            raise UnavailableError("NVML sees no GPU on this machine")
        chosen = list(range(count)) if gpus is None else list(gpus)
        bad = [gpu for gpu in chosen if not 0 <= gpu < count]
        if bad:
            raise ConfigError(f"GPU {bad[0]} does not exist: this machine has GPUs 0..{count - 1}")
        self.handles = {gpu: self.nvml.nvmlDeviceGetHandleByIndex(gpu) for gpu in chosen}
        super().__init__([_nvml_limits(self.nvml, gpu) for gpu in chosen], brake_mhz=brake_mhz)
        self.dry_run = dry_run
        self._echo = echo

    def _set(self, setting: Setting) -> None:
        if self.dry_run:
            self._echo(f"dry-run: {setting.nvml_call()}")
            return
        handle = self.handles[setting.gpu]
        try:
            if setting.knob == "lock":
                assert setting.value is not None
                mhz = round(setting.value)
                self.nvml.nvmlDeviceSetGpuLockedClocks(handle, mhz, mhz)
            elif setting.knob == "reset-lock":
                self.nvml.nvmlDeviceResetGpuLockedClocks(handle)
            else:
                assert setting.value is not None
                self.nvml.nvmlDeviceSetPowerManagementLimit(handle, round(setting.value * 1000))
        except self.nvml.NVMLError as error:
            raise UnavailableError(f"GPU {setting.gpu}: {setting.knob} failed: {error}") from None

    def read_power_w(self) -> float:
        total_mw = sum(int(self.nvml.nvmlDeviceGetPowerUsage(handle)) for handle in self.handles.values())
        return total_mw / 1000.0

    def close(self) -> None:
        self.nvml.nvmlShutdown()


# ---- telemetry ------------------------------------------------------------------------------------


def parse_power_line(line: str, *, lineno: int = 0, source: str = "nvidia-smi") -> tuple[int, float] | None:
    """``"3, 58.67"`` -> (3, 58.67) from ``--query-gpu=index,power.draw --format=csv,noheader,nounits``;
    None for ``[N/A]`` power. Anything else is a ConfigError naming the line and column (the recorded-CSV
    reader, :func:`~strato.traces.gpu_power.read_nvidia_smi`, needs a header and a timestamp column, which
    this stream has neither of)."""
    fields = [f.strip() for f in line.strip().split(",")]
    where = f"{source}: row {lineno}" if lineno else source
    if len(fields) != 2:
        raise ConfigError(f"{where}: expected 'index, power.draw', got {line.strip()!r}")
    index, power = fields
    if not index.isdigit():
        raise ConfigError(f"{where}, column index: {index!r} is not a GPU index")
    if power.startswith("["):
        return None
    try:
        watts = float(power.removesuffix("W").strip())
    except ValueError:
        raise ConfigError(f"{where}, column power.draw: {power!r} is not a number of watts") from None
    if not (math.isfinite(watts) and watts >= 0):
        raise ConfigError(f"{where}, column power.draw: {power!r} is not a non-negative number")
    return int(index), watts


class NvidiaSmiTelemetry:
    """A running ``nvidia-smi --query-gpu=index,power.draw --format=csv,noheader,nounits -lms N``; a
    thread reads its lines as they come. :meth:`read_power_w` is the summed power of ``gpus`` averaged
    over the samples since the last read (per GPU, then summed), or the latest readings when none came.
    ``command`` replaces the nvidia-smi argv (tests run a stand-in process)."""

    def __init__(
        self,
        gpus: Sequence[int],
        *,
        interval_ms: int = 100,
        command: Sequence[str] | None = None,
    ) -> None:
        if not gpus:
            raise ConfigError("nvidia-smi telemetry needs at least one GPU")
        if interval_ms < 1:
            raise ConfigError(f"nvidia-smi interval must be at least 1 ms, got {interval_ms}")
        self.gpus = tuple(gpus)
        argv = list(command) if command is not None else [
            "nvidia-smi",
            "--query-gpu=index,power.draw",
            "--format=csv,noheader,nounits",
            f"-lms={interval_ms}",
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
            )
        except OSError as error:
            raise UnavailableError(f"cannot run {argv[0]}: {error.strerror or error}") from None
        self._lock = threading.Lock()
        self._sums = dict.fromkeys(self.gpus, 0.0)
        self._counts = dict.fromkeys(self.gpus, 0)
        self._latest: dict[int, float] = {}
        self.lines = 0
        self.error: ConfigError | None = None
        self._thread = threading.Thread(target=self._read, name="nvidia-smi-telemetry", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if not line.strip():
                continue
            try:
                parsed = parse_power_line(line, lineno=self.lines + 1)
            except ConfigError as error:
                self.error = error
                return
            with self._lock:
                self.lines += 1
                if parsed is None or parsed[0] not in self._sums:
                    continue
                gpu, watts = parsed
                self._sums[gpu] += watts
                self._counts[gpu] += 1
                self._latest[gpu] = watts

    def wait_ready(self, timeout_s: float = 5.0) -> None:
        """Block until every watched GPU has reported once (UnavailableError after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.error is not None:
                raise self.error
            with self._lock:
                missing = [gpu for gpu in self.gpus if gpu not in self._latest]
            if not missing:
                return
            if time.monotonic() > deadline or (
                self.process.poll() is not None and not self._thread.is_alive()
            ):
                raise UnavailableError(
                    f"nvidia-smi telemetry: no reading of GPU {missing[0]} in {timeout_s:g} s"
                )
            time.sleep(0.01)

    def read_power_w(self) -> float:
        if self.error is not None:
            raise self.error
        with self._lock:
            missing = [gpu for gpu in self.gpus if gpu not in self._latest]
            if missing:
                raise UnavailableError(f"nvidia-smi telemetry: no reading of GPU {missing[0]} yet")
            total = 0.0
            for gpu in self.gpus:
                count = self._counts[gpu]
                total += self._sums[gpu] / count if count else self._latest[gpu]
                self._sums[gpu], self._counts[gpu] = 0.0, 0
        return total

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._thread.join(timeout=5)


class ReplayTelemetry:
    """A recorded ``nvidia-smi`` CSV as telemetry: each read is the mean summed power of the watched GPUs
    over the next ``telemetry_s`` of the recording (10 Hz grid of :meth:`GpuPowerTrace.gpu_power`).
    ``watch``: the GPU indices to sum, as the recording names them (its index column, else the position of
    its rows in each burst); None: every recorded GPU. :attr:`clock` is the recording's time since its
    start, for :func:`run_control`'s ``clock``."""

    def __init__(
        self,
        path: str | Path,
        telemetry_s: float,
        *,
        gpus: int | None = None,
        watch: Sequence[int] | None = None,
    ) -> None:
        from strato.traces.gpu_power import read_nvidia_smi

        trace = read_nvidia_smi(path, gpus=gpus)
        self.source = trace.source
        self.gpus = trace.gpus
        ids = [int(i) for i in trace.gpu_ids] if trace.gpu_from == "index" else list(range(trace.gpus))
        self.gpu_ids: tuple[int, ...] = tuple(ids)
        """The recorded GPUs' indices, in the recording's order."""
        chosen = list(ids) if watch is None else list(watch)
        stray = [gpu for gpu in chosen if gpu not in ids]
        if stray:
            raise ConfigError(
                f"{self.source}: GPU {stray[0]} is not in the recording (GPUs {', '.join(map(str, ids))})"
            )
        self.watched: tuple[int, ...] = tuple(chosen)
        grid, matrix = trace.gpu_power(10.0)
        self.time_s = grid - grid[0]
        # Only the controlled GPUs count, as NVML and nvidia-smi telemetry read only those.
        self.power_w = matrix[:, [ids.index(gpu) for gpu in chosen]].sum(axis=1)
        self.telemetry_s = telemetry_s
        self.now = 0.0

    @property
    def duration_s(self) -> float:
        return float(self.time_s[-1])

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)

    def read_power_w(self) -> float:
        window = (self.time_s > self.now - self.telemetry_s) & (self.time_s <= self.now)
        if not window.any():
            return float(np.interp(self.now, self.time_s, self.power_w))
        return float(self.power_w[window].mean())


# ---- the live loop --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlStep:
    time_s: float
    power_w: float
    share: float
    actions: tuple[str, ...]
    settings: tuple[Setting, ...]


@dataclass(frozen=True)
class ControlRun:
    """What :func:`run_control` saw and did."""

    controller: str
    budget_w: float
    telemetry_s: float
    classes: Mapping[str, tuple[int, ...]]
    steps: tuple[ControlStep, ...] = field(repr=False)
    brake_events: int
    released: tuple[Setting, ...]

    @property
    def settings(self) -> tuple[Setting, ...]:
        return tuple(s for step in self.steps for s in step.settings)

    @property
    def peak_share(self) -> float:
        """The highest share of the budget read; the initial settings' step has no reading (NaN)."""
        return max((step.share for step in self.steps if not math.isnan(step.share)), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "controller": self.controller,
            "budget_w": self.budget_w,
            "telemetry_s": self.telemetry_s,
            "classes": {name: list(gpus) for name, gpus in self.classes.items()},
            "steps": len(self.steps),
            "peak_share": self.peak_share,
            "brake_events": self.brake_events,
            "actions": [
                {"time_s": step.time_s, "share": step.share, "action": action}
                for step in self.steps
                for action in step.actions
            ],
            "settings": [s.nvml_call() for s in self.settings],
            "released": [s.nvml_call() for s in self.released],
        }


def row_info(actuator: Actuator, budget_w: float, classes: Mapping[str, Sequence[int]]) -> RowInfo:
    """The controller's view of one machine's GPUs: each GPU a one-GPU "server" (clocks are set per GPU
    here), the budget all GPU power, no rest-of-server power (NVML does not see it)."""
    clocks = actuator.clocks()
    if not budget_w > 0:
        raise ConfigError(f"the power budget must be positive, got {budget_w!r} W")
    return RowInfo(
        servers=len(actuator.gpus),
        low_priority_servers=len(classes.get("low", ())),
        gpus_per_server=1,
        clocks=clocks,
        budget_w=budget_w,
        rest_busy_w=0.0,
        idle_row_w=0.0,
        actuation_delay_s=0.0,
    )


def check_classes(actuator: Actuator, classes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
    """``{"high": ..., "low": ...}`` as tuples: the two classes split the actuator's GPUs exactly."""
    unknown = sorted(set(classes) - {"high", "low"})
    if unknown:
        raise ConfigError(f"priority classes are 'high' and 'low', not {unknown[0]!r}")
    low = tuple(classes.get("low", ()))
    high = tuple(classes.get("high", tuple(g for g in actuator.gpus if g not in low)))
    for name, gpus in (("low", low), ("high", high)):
        stray = [g for g in gpus if g not in actuator.limits]
        if stray:
            raise ConfigError(
                f"{name}-priority GPU {stray[0]} is not among the controlled GPUs {list(actuator.gpus)}"
            )
    both = set(low) & set(high)
    if both:
        raise ConfigError(f"GPU {min(both)} is in both priority classes")
    missing = set(actuator.gpus) - set(low) - set(high)
    if missing:
        raise ConfigError(f"GPU {min(missing)} is in no priority class")
    return {"high": high, "low": low}


def fit_to_limits(actuator: Actuator, action: Action, gpus: Sequence[int]) -> tuple[Action, str]:
    """``action`` with a power cap under the targeted GPUs' minimum power limit raised to it, and how to
    describe it. A controller's automatic cap has its own floor (capping: a quarter of TDP), which can be
    under what NVML accepts (an H100 SXM takes no limit under ~200 W): refusing it mid-run would end the
    loop with the row over its budget, while the nearest limit the GPUs take still lowers their power."""
    if action.kind != "cap" or action.cap_w is None or not gpus:
        return action, action.describe()
    floor = max(actuator.limits[gpu].min_limit_w for gpu in gpus)
    if action.cap_w >= floor:
        return action, action.describe()
    fitted = replace(action, cap_w=floor)
    return fitted, f"{fitted.describe()} (asked {action.cap_w:.0f} W, under the GPUs' minimum power limit)"


def run_control(
    controller: PowerController,
    actuator: Actuator,
    budget_w: float,
    telemetry_s: float,
    classes: Mapping[str, Sequence[int]],
    *,
    telemetry: Telemetry | None = None,
    duration_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_step: Callable[[ControlStep], None] | None = None,
    release: bool = True,
) -> ControlRun:
    """Every ``telemetry_s`` read the GPUs' power (``telemetry``, default the actuator's own reading),
    show it to ``controller`` against ``budget_w`` and apply its actions through ``actuator`` at once.
    Stops after ``duration_s`` (None: until Ctrl-C); then, with ``release``, resets every knob it set.
    Deadlines are absolute (step ``k`` at ``start + k * telemetry_s``), so reading and setting never make
    the schedule drift."""
    if not telemetry_s > 0:
        raise ConfigError(f"the telemetry interval must be positive, got {telemetry_s!r} s")
    if duration_s is not None and not duration_s >= 0:
        raise ConfigError(f"duration must be zero or more seconds, got {duration_s!r}")
    groups = check_classes(actuator, classes)
    controller.bind(row_info(actuator, budget_w, groups))
    source: Telemetry = telemetry if telemetry is not None else actuator
    targets = {"high": groups["high"], "low": groups["low"], "all": actuator.gpus}
    steps: list[ControlStep] = []
    brake_events = 0
    start = clock()
    initial: list[Setting] = []
    for action in controller.initial():
        fitted, _ = fit_to_limits(actuator, action, targets[action.target])
        initial.extend(actuator.apply(fitted, targets[action.target]))
    if initial:
        steps.append(ControlStep(0.0, math.nan, math.nan, ("initial",), tuple(initial)))
    released: tuple[Setting, ...] = ()
    k = 0
    try:
        while True:
            k += 1
            due = start + k * telemetry_s
            if duration_s is not None and due - start > duration_s + 1e-9:
                break
            wait = due - clock()
            if wait > 0:
                sleep(wait)
            now = clock() - start
            power = source.read_power_w()
            observation = RowObservation(now, power, budget_w)
            actions = controller.decide(observation)
            settings: list[Setting] = []
            described: list[str] = []
            for action in actions:
                if action.kind == "brake" and action.brake and not actuator.brake_on:
                    brake_events += 1
                fitted, text = fit_to_limits(actuator, action, targets[action.target])
                settings.extend(actuator.apply(fitted, targets[action.target]))
                described.append(text)
            step = ControlStep(now, power, observation.share, tuple(described), tuple(settings))
            steps.append(step)
            if on_step is not None:
                on_step(step)
    except KeyboardInterrupt:
        pass
    finally:
        if release:
            released = actuator.release_all()
    return ControlRun(
        controller=controller.describe(),
        budget_w=budget_w,
        telemetry_s=telemetry_s,
        classes=groups,
        steps=tuple(steps),
        brake_events=brake_events,
        released=released,
    )
