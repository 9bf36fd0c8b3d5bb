"""GPU and server power of LLM inference, per iteration, as a function of phase, load and SM clock.

One :class:`PowerModel` per server type answers three questions, vectorised over arrays:

* how much a GPU draws in a phase (idle, an iteration with prompts, a decode stretch) at its load (prompt
  tokens in the iteration, requests in the decode batch) and its SM clock (:meth:`PowerModel.gpu_power_w`);
* how much slower each phase runs at a clock (:meth:`PowerModel.slowdown`): prefill is compute-bound and
  slows almost in proportion to the clock, decode is memory-bound and hardly slows;
* what the whole server draws: its GPUs plus the rest of the machine (CPUs, NVSwitches, NICs, fans), which
  moves between an idle and a busy level (:meth:`PowerModel.server_power_w`).

A GPU never draws more than its power limit for long: when a phase's demand at the locked clock is above
the limit (TDP, or a power cap), the GPU lowers its own clock until the demand fits, and the phase runs at
that *effective* clock (:meth:`PowerModel.effective_clock_mhz`). That is why locking the clock a little
below the maximum takes little from prefill (it was power-bound, below the maximum clock, anyway) and
takes the most power from where it is cheapest (docs/power.md).

Frequency scaling (per phase): the active power, above idle, scales as ``(f / f_max) ** exponent``; the
time scales as ``1 + compute_share * (f_max / f - 1)``. The exponents and compute shares are fitted to the
POLCA paper's A100 characterisation (docs/power.md has the figures and the fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError

FloatArray = NDArray[np.float64]

IDLE, PREFILL, DECODE = 0, 1, 2
"""Phases, as the engine's phase log numbers them (:data:`strato.llm.engine.PHASE_IDLE` ...)."""
PHASES = ("idle", "prefill", "decode")


@dataclass(frozen=True)
class GpuClocks:
    """A GPU's settable SM clock range and its power limit (TDP)."""

    name: str
    min_mhz: float
    max_mhz: float
    tdp_w: float

    def __post_init__(self) -> None:
        if not 0 < self.min_mhz < self.max_mhz:
            raise ConfigError(
                f"GPU {self.name}: clock range must be 0 < min < max, got {self.min_mhz}..{self.max_mhz}"
            )
        if not self.tdp_w > 0:
            raise ConfigError(f"GPU {self.name}: TDP must be positive, got {self.tdp_w!r}")

    def check_clock(self, mhz: float, what: str = "clock") -> float:
        if not self.min_mhz <= mhz <= self.max_mhz:
            raise ConfigError(
                f"{what} {mhz:g} MHz is outside the {self.name}'s SM clock range "
                f"{self.min_mhz:g}..{self.max_mhz:g} MHz"
            )
        return float(mhz)


@dataclass(frozen=True)
class Curve:
    """A piecewise-linear curve held flat outside its points (power saturates; it is never extrapolated)."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.xs) != len(self.ys) or not self.xs:
            raise ConfigError("a curve needs as many x as y values, at least one")
        if any(b <= a for a, b in zip(self.xs, self.xs[1:], strict=False)):
            raise ConfigError(f"curve x values must increase strictly: {self.xs}")

    def __call__(self, x: FloatArray | float) -> FloatArray:
        return np.interp(np.asarray(x, dtype=np.float64), self.xs, self.ys)


@dataclass(frozen=True)
class FrequencyScaling:
    """How one phase responds to the SM clock (see the module docstring for the two laws)."""

    power_exponent: float
    """Active power (above idle) scales as ``(f / f_max) ** power_exponent``."""
    compute_share: float
    """Share of the phase's time that scales with ``1 / f`` (1: compute-bound, 0: memory-bound)."""

    def __post_init__(self) -> None:
        if not self.power_exponent > 0:
            raise ConfigError(f"power_exponent must be positive, got {self.power_exponent!r}")
        if not 0 <= self.compute_share <= 1:
            raise ConfigError(f"compute_share must be in [0, 1], got {self.compute_share!r}")


@dataclass(frozen=True)
class PhasePower:
    """GPU power at the maximum clock: idle, per prompt tokens in an iteration, per decode batch size."""

    idle_w: float
    prefill_w: Curve
    """Power during an iteration with prompts, by prompt tokens in the iteration."""
    decode_w: Curve
    """Power during a decode-only iteration, by requests in the batch."""
    source: str
    """Where the levels come from (a file and the configuration it was measured on)."""


@dataclass(frozen=True)
class ServerShape:
    """A server's GPUs and the power of everything else in it."""

    label: str
    gpus: int
    rest_idle_w: float
    """CPUs, memory, NVSwitches, NICs, fans and power-supply loss while the GPUs idle."""
    rest_busy_w: float
    """The same while the GPUs work (fans and CPUs work harder)."""
    rated_w: float
    """The server's rated maximum draw (its nameplate; what a row provisions per server by default)."""
    rest_lag_s: float = 30.0
    """Time constant with which the rest of the server follows its GPUs' activity: fans and power supplies
    answer heat, not single iterations (0: instantly)."""

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ConfigError(f"{self.label}: a server needs at least one GPU")
        if not 0 <= self.rest_idle_w <= self.rest_busy_w:
            raise ConfigError(f"{self.label}: rest-of-server power must satisfy 0 <= idle <= busy")
        if not self.rated_w > 0:
            raise ConfigError(f"{self.label}: rated power must be positive")
        if not 0 <= self.rest_lag_s < math.inf:
            raise ConfigError(f"{self.label}: rest-of-server lag must be a finite, non-negative time")


@dataclass(frozen=True)
class PowerModel:
    """Power and speed of one server type running one model (see the module docstring)."""

    clocks: GpuClocks
    server: ServerShape
    phases: PhasePower
    prefill_scaling: FrequencyScaling
    decode_scaling: FrequencyScaling
    spike_w: float | None = None
    """The most a GPU draws for an instant (prompt spikes pass TDP for milliseconds); None: TDP."""
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.phases.idle_w >= self.clocks.tdp_w:
            raise ConfigError(
                f"idle power {self.phases.idle_w:g} W must be below TDP {self.clocks.tdp_w:g} W"
            )

    # ---- one GPU --------------------------------------------------------------------------------

    def demand_w(self, phase: NDArray[np.int64], load: FloatArray) -> FloatArray:
        """What a GPU would draw at the maximum clock with no power limit, per phase and load."""
        phase = np.asarray(phase)
        load = np.asarray(load, dtype=np.float64)
        out = np.full(phase.shape, self.phases.idle_w, dtype=np.float64)
        prefill = phase == PREFILL
        decode = phase == DECODE
        out[prefill] = self.phases.prefill_w(load[prefill])
        out[decode] = self.phases.decode_w(load[decode])
        return out

    def _exponent(self, phase: NDArray[np.int64]) -> FloatArray:
        prefill, decode = self.prefill_scaling.power_exponent, self.decode_scaling.power_exponent
        return np.where(np.asarray(phase) == PREFILL, prefill, decode)

    def _scale(self, phase: NDArray[np.int64], mhz: FloatArray) -> FloatArray:
        ratio = np.asarray(mhz, dtype=np.float64) / self.clocks.max_mhz
        return np.power(ratio, self._exponent(phase))

    def effective_clock_mhz(
        self,
        phase: NDArray[np.int64],
        load: FloatArray,
        locked_mhz: FloatArray,
        limit_w: FloatArray | None = None,
    ) -> FloatArray:
        """The clock a GPU runs a phase at: the locked clock, lowered until the demand fits the limit
        (``limit_w``: a power cap per element; None: TDP)."""
        phase = np.asarray(phase)
        locked = np.broadcast_to(np.asarray(locked_mhz, dtype=np.float64), phase.shape)
        limit = np.broadcast_to(
            np.asarray(self.clocks.tdp_w if limit_w is None else limit_w, dtype=np.float64), phase.shape
        )
        idle = self.phases.idle_w
        active = np.maximum(self.demand_w(phase, load) - idle, 1e-9)
        headroom = np.maximum(limit - idle, 1e-9)
        fitting = self.clocks.max_mhz * np.power(
            np.minimum(headroom / active, 1.0), 1.0 / self._exponent(phase)
        )
        return np.clip(np.minimum(locked, fitting), self.clocks.min_mhz, self.clocks.max_mhz)

    def gpu_power_w(
        self,
        phase: NDArray[np.int64],
        load: FloatArray,
        locked_mhz: FloatArray,
        limit_w: FloatArray | None = None,
    ) -> FloatArray:
        """Mean power of one GPU per element: phase, load, locked clock and optional power cap."""
        phase = np.asarray(phase)
        clock = self.effective_clock_mhz(phase, load, locked_mhz, limit_w)
        idle = self.phases.idle_w
        active = np.maximum(self.demand_w(phase, load) - idle, 0.0)
        return np.where(phase == IDLE, idle, idle + active * self._scale(phase, clock))

    def slowdown(
        self,
        phase: NDArray[np.int64] | int,
        load: FloatArray | float,
        locked_mhz: FloatArray | float,
        limit_w: FloatArray | float | None = None,
    ) -> FloatArray:
        """Time multiplier of a phase at a locked clock (and power cap), against the uncapped GPU at its
        maximum clock, which is itself power-bound where the phase's demand passes TDP."""
        phase = np.asarray(phase)
        load = np.broadcast_to(np.asarray(load, dtype=np.float64), phase.shape)
        locked = np.broadcast_to(np.asarray(locked_mhz, dtype=np.float64), phase.shape)
        limit = (
            None if limit_w is None else np.broadcast_to(np.asarray(limit_w, dtype=np.float64), phase.shape)
        )
        now = self.effective_clock_mhz(phase, load, locked, limit)
        free = self.effective_clock_mhz(phase, load, np.full(phase.shape, self.clocks.max_mhz))
        share = np.where(
            phase == PREFILL, self.prefill_scaling.compute_share, self.decode_scaling.compute_share
        )
        return np.where(phase == IDLE, 1.0, (1 + share * (free / now - 1)))

    # ---- one server -----------------------------------------------------------------------------

    def server_power_w(self, gpu_w_sum: FloatArray, busy_share: FloatArray) -> FloatArray:
        """A server's power from the sum of its GPUs' power and the share of its GPUs that work."""
        server = self.server
        rest = server.rest_idle_w + (server.rest_busy_w - server.rest_idle_w) * np.clip(busy_share, 0.0, 1.0)
        return np.asarray(gpu_w_sum, dtype=np.float64) + rest

    @property
    def idle_server_w(self) -> float:
        return self.server.gpus * self.phases.idle_w + self.server.rest_idle_w

    def with_phases(self, phases: PhasePower) -> PowerModel:
        return replace(self, phases=phases)
