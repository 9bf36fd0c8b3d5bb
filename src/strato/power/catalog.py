"""Power models by machine and LLM: embedded, calibrated constants (docs/power.md says how each was measured).

The GPU levels come from the public Splitwise profile (``splitwise-profiles/perf_model.csv``: A100 peak and
average power per prompt size and batch, TP8 rows for the models a DGX serves whole) and the idle level
from the 5 ms A100 ``nvidia-smi`` traces (``llm-gpu-power``). :mod:`strato.power.calibrate` recomputes the
curves from the file; a test checks the constants here against it. H100 has no measured power in either
source: its curves are the A100's fractions of TDP applied to the H100's 700 W, an assumption the output
says whenever it is used.
"""

from __future__ import annotations

from strato.errors import ConfigError
from strato.power.model import Curve, FrequencyScaling, GpuClocks, PhasePower, PowerModel, ServerShape

A100_CLOCKS = GpuClocks("a100-80gb", min_mhz=210.0, max_mhz=1410.0, tdp_w=400.0)
H100_CLOCKS = GpuClocks("h100-80gb", min_mhz=210.0, max_mhz=1980.0, tdp_w=700.0)

# Fractions of TDP at the maximum clock, TP8 (one model per 8-GPU server), from perf_model.csv: prefill
# is the monotone fit of the runs' peak power by prompt tokens in the iteration, decode the runs' average
# power (which 128 decode iterations dominate) by batch size (strato.power.calibrate recomputes both).
# Where the profile shows prefill pinned at TDP (>= POWER_BOUND), the GPU was power-bound: it drew TDP at a
# clock below the maximum, and what it would draw unthrottled is not measured. PREFILL_BOUND_DEMAND stands
# in for it, chosen so that locking 1110 MHz takes ~22 % off such a peak, POLCA's "up to about 20 %".
POWER_BOUND = 0.95
PREFILL_BOUND_DEMAND = 1.3
_PREFILL_FRACTIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "llama2-70b": (
        (128, 256, 512, 1024, 2048, 4096, 8192),
        (0.460, 0.658, 0.749, 0.754, 0.954, 0.980, 0.980),
    ),
    "bloom-176b": (
        (128, 256, 512, 1024, 2048, 4096, 8192),
        (0.691, 0.723, 0.876, 1.007, 1.017, 1.017, 1.024),
    ),
}
_DECODE_FRACTIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "llama2-70b": ((1, 2, 4, 8, 16), (0.435, 0.435, 0.438, 0.438, 0.458)),
    "bloom-176b": ((1, 2, 4, 8, 16), (0.635, 0.635, 0.635, 0.643, 0.656)),
}
A100_IDLE_W = 58.0
"""Median per-GPU power before model load in the four A100 ``nvidia-smi`` traces (docs/power.md)."""

# Active power ~ f * V^2 with the voltage falling with the clock in this range: exponent 2.5. Compute
# shares (the part of a phase's time that scales with 1 / f): prefill is compute-bound (0.85); decode
# reads the weights and the KV cache from HBM, whose bandwidth does not follow the SM clock (0.1): the
# public Splitwise profile's power-capped H100 runs its token phase no slower than the uncapped one while
# its prompt phase takes 1.3x. At 1110 MHz a conversation request then runs 3.2 % slower and a coding
# one 8.4 % (POLCA: "<= ~7 %" for inference; docs/power.md has the model's whole table).
PREFILL_SCALING = FrequencyScaling(power_exponent=2.5, compute_share=0.85)
DECODE_SCALING = FrequencyScaling(power_exponent=2.5, compute_share=0.1)

DGX_A100 = ServerShape("DGX-A100", gpus=8, rest_idle_w=1500.0, rest_busy_w=2500.0, rated_w=6500.0)
DGX_H100 = ServerShape("DGX-H100", gpus=8, rest_idle_w=1900.0, rest_busy_w=3200.0, rated_w=10200.0)

_SERVERS = {"a100-80gb": (A100_CLOCKS, DGX_A100), "h100-80gb": (H100_CLOCKS, DGX_H100)}


def power_model(machine: str, model: str) -> PowerModel:
    """The power model of ``machine`` (a :mod:`strato.llm.catalog` machine name) serving ``model``."""
    if machine not in _SERVERS:
        raise ConfigError(f"no power model for machine {machine!r} (known: {', '.join(sorted(_SERVERS))})")
    if model not in _PREFILL_FRACTIONS:
        raise ConfigError(
            f"no power model for LLM {model!r} (known: {', '.join(sorted(_PREFILL_FRACTIONS))})"
        )
    clocks, server = _SERVERS[machine]
    tdp = clocks.tdp_w
    tokens, prefill = _PREFILL_FRACTIONS[model]
    batches, decode = _DECODE_FRACTIONS[model]
    idle = A100_IDLE_W * tdp / A100_CLOCKS.tdp_w
    source = "splitwise-profiles/perf_model.csv (A100, TP8) + llm-gpu-power idle"
    notes: tuple[str, ...] = ()
    if machine != "a100-80gb":
        source += f", scaled to {clocks.name} TDP"
        notes = (f"{clocks.name}: no measured power in the public data; A100 fractions of TDP assumed",)
    phases = PhasePower(
        idle_w=idle,
        prefill_w=Curve(
            tokens, tuple((PREFILL_BOUND_DEMAND if f >= POWER_BOUND else f) * tdp for f in prefill)
        ),
        decode_w=Curve(batches, tuple(f * tdp for f in decode)),
        source=source,
    )
    return PowerModel(clocks, server, phases, PREFILL_SCALING, DECODE_SCALING, notes=notes)


def machines() -> list[str]:
    return sorted(_SERVERS)


def models() -> list[str]:
    return sorted(_PREFILL_FRACTIONS)
