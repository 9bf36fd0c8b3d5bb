"""Where the power model's numbers come from, recomputed from the real data, and how well they hold.

Three parts:

* :func:`profile_phase_power`: the catalog's prefill and decode curves (fractions of TDP) recomputed from
  the public Splitwise profile (``splitwise-profiles/perf_model.csv``); a test holds
  :mod:`strato.power.catalog` to them;
* :func:`trace_power_model` and :func:`trace_accuracy`: a :class:`~strato.power.model.PowerModel` whose
  levels come from one real ``nvidia-smi`` trace (``llm-gpu-power``) with its phase table, and its error on
  input sizes it was not fitted on (leave one input-size group out);
* :func:`replay_trace`: the trace's requests replayed through the Splitwise engine, priced with the
  trace-calibrated model, and the replay's peak-to-mean set beside the real trace's.

Which level. A phase's power is taken as the mean over the run's GPUs (its energy counters over its
runtime), not the level of the GPU at work: the energy counters integrate every millisecond (the samples,
~9 a second, only estimate the working GPU's level as a percentile), and what a server's meter and a row
budget see is the sum over GPUs, which is ``gpus x`` this mean. For the one-GPU run the two are the same.

Why one level per phase. At ~9 readings a second the traces show no separate prefill spike: the first part
of a phase (where the prompt is processed) draws what the rest does, and the level rises with the prompt
(longer contexts make every decode step heavier too: batch 32 x 2000 tokens of attention). So the trace
model sets the prefill curve to each input group's phase level, by prompt tokens in the iteration (batch x
input tokens), and decode (batch 32, the only batch the traces ran) to the level of the group with the
shortest prompts, the phase closest to pure decode. The engine's decode power depends on the batch only,
not the context; this is the model's main departure from the traces (see :func:`replay_trace`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError
from strato.llm.catalog import get_machine, get_model
from strato.llm.designs import make_design
from strato.llm.engine import ClusterSimulator, SchedulerConfig
from strato.llm.perf import load_perf_model, monotone, read_profile_rows
from strato.power.catalog import A100_CLOCKS, DECODE_SCALING, PREFILL_SCALING
from strato.power.model import Curve, PhasePower, PowerModel, ServerShape
from strato.power.row import RowMeter
from strato.traces.gpu_power import (
    GroupPower,
    TraceProfile,
    characterise,
    find_runs,
    group_phases,
    read_gpu_phases,
    read_nvidia_smi,
)
from strato.traces.llm import LlmRequests

FloatArray = NDArray[np.float64]

PROFILE_DECODE_PROMPT = 512
"""The prompt size of the profile's batch sweep (its only prompt with batches above 1)."""


# --------------------------------------------------------------------------------------------------
# (a) the Splitwise profile
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfilePower:
    """Prefill and decode power of one model as fractions of TDP, recomputed from a profile file."""

    model: str
    tensor_parallel: int
    source: str
    prefill_tokens: tuple[float, ...]
    prefill_fraction: tuple[float, ...]
    """Monotone (pool-adjacent-violators) fit of the median ``peak_power`` by batch tokens."""
    decode_batch: tuple[float, ...]
    decode_fraction: tuple[float, ...]
    """Median ``average_power`` by batch size at prompt 512, held non-decreasing (running maximum)."""


def profile_phase_power(model: str, path: str | Path | None = None, tensor_parallel: int = 8) -> ProfilePower:
    """The catalog's curves for ``model`` recomputed from ``path`` (default the shared
    ``splitwise-profiles/perf_model.csv``), A100 rows at ``tensor_parallel`` with measured power.

    Prefill: the runs' ``peak_power`` pooled by prompt tokens in the iteration (prompt x batch; the batch-1
    runs and the prompt-512 batch sweep meet at 1024..8192), median per point, then the weighted monotone
    fit: a prompt of more tokens never draws less. Decode: ``average_power`` of the batch sweep, which its
    128 decode iterations dominate, median by batch size, held non-decreasing (the 2-request median dips
    below the 1-request one by less than its spread).
    """
    if path is None:
        from strato.llm.perf import profile_path

        path = profile_path()
    name = get_model(model).name
    rows = [
        r
        for r in read_profile_rows(path)
        if _profile_name(r.model, "model") == name
        and _profile_name(r.hardware, "machine") == "a100-80gb"
        and r.tensor_parallel == tensor_parallel
        and r.peak_power > 0
    ]
    if not rows:
        raise ConfigError(f"{path}: no A100 rows with measured power for {name} at TP{tensor_parallel}")
    peaks: dict[int, list[float]] = {}
    for r in rows:
        peaks.setdefault(r.prompt_size * r.batch_size, []).append(r.peak_power)
    tokens = sorted(peaks)
    medians = np.array([float(np.median(peaks[t])) for t in tokens])
    weights = np.array([float(len(peaks[t])) for t in tokens])
    prefill = monotone(medians, weights)
    averages: dict[int, list[float]] = {}
    for r in rows:
        if r.prompt_size == PROFILE_DECODE_PROMPT:
            averages.setdefault(r.batch_size, []).append(r.average_power)
    if not averages:
        raise ConfigError(f"{path}: no prompt-{PROFILE_DECODE_PROMPT} rows for {name} at TP{tensor_parallel}")
    batches = sorted(averages)
    decode = np.maximum.accumulate([float(np.median(averages[b])) for b in batches])
    return ProfilePower(
        model=name,
        tensor_parallel=tensor_parallel,
        source=str(path),
        prefill_tokens=tuple(float(t) for t in tokens),
        prefill_fraction=tuple(float(v) for v in prefill),
        decode_batch=tuple(float(b) for b in batches),
        decode_fraction=tuple(float(v) for v in decode),
    )


def _profile_name(text: str, kind: str) -> str:
    try:
        return get_model(text).name if kind == "model" else get_machine(text).name
    except ConfigError:
        return text.strip().lower()


# --------------------------------------------------------------------------------------------------
# (b) the nvidia-smi traces
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceRun:
    """One real run: its trace and phase table, characterised (``gpu_power.characterise``)."""

    name: str
    """The model folder of the trace (``llama2-70b``, ...)."""
    trace_path: str
    table_path: str
    profile: TraceProfile
    groups: tuple[GroupPower, ...]
    batch_size: int
    output_tokens: int

    @property
    def gpus(self) -> int:
        return self.profile.gpus


def load_trace_run(trace_path: str | Path, table_path: str | Path) -> TraceRun:
    """Read and characterise one ``nvidia-smi`` CSV with its phase table (strict readers: a malformed
    file is one :class:`~strato.errors.TraceFormatError` naming file, row and column)."""
    trace = read_nvidia_smi(trace_path)
    phases = read_gpu_phases(table_path, repair_starts=True)
    profile = characterise(trace, phases)
    batches = {p.batch_size for p in profile.phases}
    outputs = {p.output_tokens for p in profile.phases}
    if len(batches) != 1 or len(outputs) != 1:
        raise ConfigError(
            f"{table_path}: a trace model needs one batch size and one output limit, "
            f"got batches {sorted(batches)} and outputs {sorted(outputs)}"
        )
    groups = tuple(group_phases(profile))
    if len(groups) < 3:
        raise ConfigError(f"{table_path}: {len(groups)} input-size group(s); calibration needs at least 3")
    return TraceRun(
        name=Path(trace_path).parents[2].name,
        trace_path=str(trace_path),
        table_path=str(table_path),
        profile=profile,
        groups=groups,
        batch_size=batches.pop(),
        output_tokens=outputs.pop(),
    )


def trace_runs(folder: str | Path | None = None) -> list[TraceRun]:
    """Every run below ``folder`` (default the data root's
    ``llm-gpu-power/plots/parameter-scale-input-test``), paired as :func:`find_runs` pairs them."""
    if folder is None:
        from strato.traces.datasets import data_root

        folder = data_root() / "llm-gpu-power/plots/parameter-scale-input-test"
    return [load_trace_run(t, p) for t, p in find_runs(folder)]


def _levels(run: TraceRun, groups: Sequence[GroupPower]) -> tuple[FloatArray, FloatArray]:
    """Prompt tokens in the iteration (batch x input) and the phase level (energy mean per GPU)."""
    x = np.array([run.batch_size * g.input_tokens for g in groups], dtype=np.float64)
    y = np.array([g.energy_mean_w for g in groups], dtype=np.float64)
    # Two groups with the same rounded input size would make the curve's x repeat: merge them.
    unique, inverse = np.unique(x, return_inverse=True)
    merged = np.array([y[inverse == k].mean() for k in range(unique.size)])
    return unique, merged


def trace_power_model(
    run: TraceRun,
    *,
    exclude_groups: Sequence[str] = (),
    server: ServerShape | None = None,
) -> PowerModel:
    """A :class:`PowerModel` of one A100 whose levels come from ``run`` (module docstring: which level and
    why). ``exclude_groups`` leaves input-size groups out of the fit (cross-validation). ``server``
    defaults to the run's own machine: its GPUs and nothing else (the traces measure GPUs only)."""
    kept = [g for g in run.groups if g.group not in set(exclude_groups)]
    if len(kept) < 2:
        raise ConfigError(f"{run.trace_path}: fewer than 2 input-size groups left to fit")
    xs, ys = _levels(run, kept)
    idle = run.profile.idle.mean_w
    phases = PhasePower(
        idle_w=idle,
        prefill_w=Curve(tuple(float(x) for x in xs), tuple(float(y) for y in ys)),
        decode_w=Curve((float(run.batch_size),), (float(ys[0]),)),
        source=f"{run.table_path} + {run.trace_path} (mean over {run.gpus} GPU(s))",
    )
    shape = server or ServerShape(
        f"{run.name} trace ({run.gpus} x A100)", gpus=run.gpus, rest_idle_w=0.0, rest_busy_w=0.0,
        rated_w=run.gpus * A100_CLOCKS.tdp_w,
    )  # fmt: skip
    return PowerModel(A100_CLOCKS, shape, phases, PREFILL_SCALING, DECODE_SCALING)


@dataclass(frozen=True)
class GroupError:
    """One held-out input-size group: the measured level and the model's, fitted without the group."""

    group: str
    input_tokens: int
    phases: int
    measured_w: float
    predicted_w: float
    worst_phase_error: float
    """The largest ``|predicted - measured| / measured`` over the group's phases (iterations >= 1)."""

    @property
    def error(self) -> float:
        return (self.predicted_w - self.measured_w) / self.measured_w


@dataclass(frozen=True)
class RunAccuracy:
    """Leave-one-group-out errors of one run (the two extreme groups are only ever fitted on: a held-out
    end of the range would test extrapolation, which the curve refuses and holds flat)."""

    run: str
    gpus: int
    groups: tuple[GroupError, ...]
    fitted_max_phase_error: float
    """The model fitted on every group, against every phase (iterations >= 1): the in-sample spread."""

    @property
    def max_error(self) -> float:
        return max(abs(g.error) for g in self.groups)

    @property
    def mean_abs_error(self) -> float:
        return float(np.mean([abs(g.error) for g in self.groups]))

    @property
    def max_phase_error(self) -> float:
        return max(g.worst_phase_error for g in self.groups)


def trace_accuracy(run: TraceRun) -> RunAccuracy:
    """Per-phase mean power of the trace-calibrated model against the real phases, each interior
    input-size group predicted by a model fitted on the other groups only."""
    errors: list[GroupError] = []
    for group in run.groups[1:-1]:
        model = trace_power_model(run, exclude_groups=(group.group,))
        load = float(run.batch_size * group.input_tokens)
        predicted = float(model.phases.prefill_w(load))
        members = [p for p in run.profile.phases if p.group == group.group]
        later = [p for p in members if p.iteration] or members
        worst = max(abs(predicted - p.energy_mean_w) / p.energy_mean_w for p in later)
        errors.append(
            GroupError(group.group, group.input_tokens, group.phases, group.energy_mean_w, predicted, worst)
        )
    full = trace_power_model(run)
    fitted = max(
        abs(float(full.phases.prefill_w(float(run.batch_size * p.input_tokens))) - p.energy_mean_w)
        / p.energy_mean_w
        for p in run.profile.phases
        if p.iteration
    )
    return RunAccuracy(run.name, run.gpus, tuple(errors), fitted)


# --------------------------------------------------------------------------------------------------
# (c) the engine replay
# --------------------------------------------------------------------------------------------------

_TRACE_MODELS = {"llama2-70b": "llama2-70b", "llama2-13b": "llama2-13b"}
"""Trace folders whose model the engine's catalog knows (Falcon-40B and Mixtral-8x7B it does not)."""


@dataclass(frozen=True)
class Replay:
    """The trace's requests through the engine, priced with the trace model, beside the real trace.

    Peak-to-mean is of the summed GPU power over the inference part (first phase start to last end),
    on the 10 Hz grid and on 1 s means."""

    run: str
    perf: str
    """The engine's performance model (profile table or analytic, its model/TP)."""
    requests: int
    model_duration_s: float
    trace_duration_s: float
    model_mean_w: float
    trace_mean_w: float
    model_peak_to_mean: float
    trace_peak_to_mean: float
    model_peak_to_mean_1s: float
    trace_peak_to_mean_1s: float
    model_busy_share: float
    """Share of the replay's span the machine was not idle."""
    trace_busy_share: float
    """Share of the trace's inference span inside a phase (the rest: between-phase gaps)."""


def _replay_requests(run: TraceRun) -> LlmRequests:
    """Each inference phase becomes ``batch`` requests of its input tokens and output limit arriving at the
    phase's start; the phases keep their real start times (from the first phase's)."""
    phases = run.profile.phases
    t0 = phases[0].start_s
    arrival = np.repeat([p.start_s - t0 for p in phases], run.batch_size).astype(np.float64)
    prompt = np.repeat([max(p.input_tokens, 1) for p in phases], run.batch_size).astype(np.int64)
    output = np.repeat([max(p.output_tokens, 1) for p in phases], run.batch_size).astype(np.int64)
    return LlmRequests(f"{run.name} trace phases", arrival, prompt, output)


def _peak_to_mean(power: FloatArray, sample_s: float) -> tuple[float, float]:
    mean = float(power.mean())
    per = max(1, round(1.0 / sample_s))
    n = power.size // per
    coarse = power[: n * per].reshape(n, per).mean(axis=1) if n else power
    return float(power.max()) / mean, float(coarse.max()) / mean


def replay_trace(run: TraceRun, *, sample_s: float = 0.1) -> Replay:
    """Replay ``run``'s requests on one mixed machine (A100, the run's GPU count as tensor parallelism;
    the profile table where it has the model at that TP, else the analytic model), record its phases,
    and price them with :func:`trace_power_model` (the GPUs only, as the trace measures)."""
    if run.name not in _TRACE_MODELS:
        raise ConfigError(
            f"the engine has no model for trace {run.name!r} (replayable: {', '.join(sorted(_TRACE_MODELS))})"
        )
    llm = get_model(_TRACE_MODELS[run.name])
    machine = get_machine("a100-80gb")
    try:
        perf = load_perf_model("profile", llm, machine, run.gpus)
        perf_name = f"profile {llm.name} TP{run.gpus}"
    except ConfigError:
        perf = load_perf_model("analytic", llm, machine, run.gpus)
        perf_name = f"analytic {llm.name} TP{run.gpus} (no profile rows)"
    design = make_design("baseline-a100", machines=1)
    sim = ClusterSimulator(design, llm, {machine.name: perf}, SchedulerConfig())
    requests = _replay_requests(run)
    sim.start(requests)
    sim.record_phases()
    sim.advance(math.inf)
    log = np.asarray(sim.phase_log, dtype=np.float64)
    end = float(np.nanmax(sim.result().completion_s))
    model = trace_power_model(run)
    meter = RowMeter(model, 1, sample_s)
    meter.add(0.0, end, log, np.full(1, A100_CLOCKS.max_mhz), np.full(1, A100_CLOCKS.tdp_w))
    series = meter.series(end)
    # The meter holds whole bins; the last one is partial.
    series = series[: max(1, int(end / sample_s))]
    idle_from = np.append(log[1:, 0], end)
    busy = float(np.sum((idle_from - log[:, 0])[log[:, 2] != 0])) / end
    p = run.profile
    span = p.inference_end_s - p.inference_start_s
    model_ptm, model_ptm_1s = _peak_to_mean(series, sample_s)
    return Replay(
        run=run.name,
        perf=perf_name,
        requests=len(requests),
        model_duration_s=end,
        trace_duration_s=span,
        model_mean_w=float(series.mean()),
        trace_mean_w=p.inference_mean_sum_w,
        model_peak_to_mean=model_ptm,
        trace_peak_to_mean=p.peak_to_mean,
        model_peak_to_mean_1s=model_ptm_1s,
        trace_peak_to_mean_1s=p.peak_to_mean_1s,
        model_busy_share=busy,
        trace_busy_share=sum(ph.runtime_s for ph in p.phases) / span,
    )
