"""POLCA's characterisation, three ways: the strato power model (and a row on the engine), the real A100
``nvidia-smi`` traces, and the paper's published numbers (docs/power-paper-notes.md; "not published" or
"not found" where the paper's figure could not be read).

:func:`characterize` returns a :class:`Characterization`; ``rows()`` gives one
``(figure, strato model, real traces, paper)`` line per figure of the issue's list. The row part is the
costly one (a 40-server day on the engine, minutes): pass ``row_run`` to reuse one, or ``row_duration_s``
with ``row_start_s`` to simulate a window of the day (tests: 20 minutes from 14:00).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from strato.errors import ConfigError
from strato.llm.catalog import get_machine, get_model
from strato.llm.designs import make_design
from strato.llm.engine import ClusterSimulator
from strato.llm.perf import PerfModel, load_perf_model
from strato.power.calibrate import (
    Replay,
    RunAccuracy,
    TraceRun,
    replay_trace,
    trace_accuracy,
    trace_runs,
)
from strato.power.catalog import power_model
from strato.power.controllers import parse_controller
from strato.power.model import DECODE, PREFILL, PowerModel
from strato.power.row import RowMeter, RowRun, RowSimulator, RowSpec, RowWorkload, largest_rise
from strato.traces.gpu_power import A100_TDP_W, ScalingPoint, power_scaling, read_gpu_phases
from strato.traces.llm import LlmRequests
from strato.traces.llm.requests import load_requests

CLOCKS_MHZ = (1410.0, 1305.0, 1275.0, 1200.0, 1110.0)
PROMPT_SIZES = (256, 512, 1024, 2048, 4096, 8192)
BATCH_SIZES = (1, 2, 4, 8, 16)
OUTPUT_SIZES = (16, 64, 256, 1024)


@dataclass(frozen=True)
class RowFigures:
    """The un-oversubscribed row on the engine (controller ``none``)."""

    servers: int
    start_s: float
    duration_s: float
    skipped_s: float
    """Left out of the rise: the first minutes (the row fills from empty) and the drain after the end."""
    provisioned_w: float
    peak_w: float
    rise_40s_w: float
    """Largest rise within 40 s on the 10 Hz series."""
    rise_40s_telemetry_w: float
    """The same on 2 s means (what the controller's telemetry sees)."""

    @property
    def peak_pct(self) -> float:
        return 100 * self.peak_w / self.provisioned_w


@dataclass(frozen=True)
class FrequencyPoint:
    """The power model at one locked SM clock against the maximum: per-phase power cut and slowdown (a
    power-bound 8192-token prefill, a 512-token prefill, a 16-request decode), and end to end for a
    typical (median-size) coding and conversation request served alone."""

    mhz: float
    prefill_bound_cut: float
    prefill_512_cut: float
    decode_cut: float
    prefill_bound_slowdown: float
    prefill_512_slowdown: float
    decode_slowdown: float
    code_e2e_slowdown: float
    conv_e2e_slowdown: float


@dataclass(frozen=True)
class EnginePeak:
    """One workload (a batch of equal requests arriving together) through the engine on one DGX-A100:
    its peak server and per-GPU power at 10 Hz."""

    label: str
    prompt_tokens: int
    output_tokens: int
    batch: int
    peak_server_w: float
    peak_gpu_w: float
    mean_server_w: float


@dataclass(frozen=True)
class TraceEffect:
    """A per-phase mean power effect in the trace aggregates: the median, over the A100 model/system
    groups, of the mean power at the largest size over that at the smallest."""

    source: str
    groups: int
    smallest: int
    largest: int
    ratio: float
    peak_size: int
    """The size where the median group draws most (the curve may turn down past it)."""


@dataclass(frozen=True)
class Characterization:
    model: str
    machine: str
    row: RowFigures | None
    frequency: tuple[FrequencyPoint, ...]
    prompt_peaks: tuple[EnginePeak, ...]
    batch_peaks: tuple[EnginePeak, ...]
    output_peaks: tuple[EnginePeak, ...]
    prefill_w: float
    """Model GPU power of a 2048-token prefill (mean over the iteration, at TDP when power-bound)."""
    prefill_demand_w: float
    """What that prefill would draw unthrottled (the short spike the power limit clips)."""
    decode_w: float
    """Model GPU power of a 16-request decode iteration."""
    runs: tuple[TraceRunFigures, ...] = ()
    input_effect: TraceEffect | None = None
    output_effect: TraceEffect | None = None
    traces_missing: str | None = None
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if self.row is not None:
            data["row"]["peak_pct"] = self.row.peak_pct
        data["rows"] = [{"figure": f, "model": m, "traces": t, "paper": p} for f, m, t, p in self.rows()]
        return data

    def rows(self) -> list[tuple[str, str, str, str]]:
        """``(figure, strato model, real traces, paper)`` per figure."""
        out: list[tuple[str, str, str, str]] = []
        traces_na = f"no traces ({self.traces_missing})" if self.traces_missing else "-"
        row = self.row
        runs = self.runs
        if row is not None:
            model_peak = (
                f"{row.peak_pct:.1f} % ({row.servers} servers, {row.duration_s / 60:g} min from "
                f"{row.start_s / 3600:g} h)"
            )
            model_rise = (
                f"{100 * row.rise_40s_w / row.provisioned_w:.1f} % at 10 Hz, "
                f"{100 * row.rise_40s_telemetry_w / row.provisioned_w:.1f} % on 2 s means"
            )
        else:
            model_peak = model_rise = "row not simulated"
        trace_peak = (
            "; ".join(f"{r.name}: {r.peak_pct_of_tdp:.0f} % of {r.gpus} x 400 W" for r in runs)
            if runs
            else traces_na
        )
        trace_rise = (
            "; ".join(
                f"{r.name}: {r.rise_pct_of_tdp:.0f} % ({r.rise_1s_pct_of_tdp:.0f} % on 1 s)" for r in runs
            )
            if runs
            else traces_na
        )
        out.append(
            (
                "inference peak, % of provisioned",
                model_peak,
                f"one server's GPUs, back-to-back batches: {trace_peak}",
                "79 % (6 weeks, 40-server row)",
            )
        )
        out.append(("largest rise within 40 s, % of provisioned", model_rise, trace_rise, "11.8 %"))
        head = (
            "; ".join(
                f"{r.name}: head/rest {r.head_over_rest:.2f}, max reading {r.gpu_peak_w:.0f} W" for r in runs
            )
            if runs
            else traces_na
        )
        out.append(
            (
                "prompt vs decode power (per GPU)",
                f"prefill 2048 tok {self.prefill_w:.0f} W (demand {self.prefill_demand_w:.0f} W, clipped at "
                f"TDP), decode batch 16 {self.decode_w:.0f} W",
                f"no separate prompt spike at ~9 readings/s: {head}",
                "prompt spikes (< 1 s) above decode power, often above TDP",
            )
        )
        p = self.prompt_peaks
        input_traces = traces_na
        if self.input_effect is not None:
            e = self.input_effect
            input_traces = (
                f"mean power x{e.ratio:.2f} from {e.smallest} to {e.largest} input tokens (median of "
                f"{e.groups} A100 groups, batch 32; highest at {e.peak_size}); "
                + "; ".join(f"{r.name}: {r.level_small_w:.0f} -> {r.level_large_w:.0f} W/GPU" for r in runs)
            )
        out.append(
            (
                "effect of prompt length on peak",
                _peak_span(p, "prompt"),
                input_traces,
                "peak rises steeply 256 -> 8192 tokens; mean nearly flat",
            )
        )
        out.append(
            (
                "effect of batch size on peak",
                _peak_span(self.batch_peaks, "batch"),
                "not measured: every trace runs batch 32",
                "larger batch raises the peak",
            )
        )
        output_traces = traces_na
        if self.output_effect is not None:
            e = self.output_effect
            output_traces = (
                f"mean power x{e.ratio:.2f} from {e.smallest} to {e.largest} output tokens (median of "
                f"{e.groups} A100 groups; highest at {e.peak_size}): rises, unlike the paper"
            )
        out.append(
            (
                "effect of output length on peak",
                _peak_span(self.output_peaks, "output"),
                output_traces,
                "latency grows linearly; peak and mean power unchanged",
            )
        )
        for f in self.frequency:
            out.append(
                (
                    f"lock {f.mhz:g} MHz: power cut / slowdown",
                    f"prefill {100 * f.prefill_bound_cut:.0f} % / "
                    f"{100 * (f.prefill_bound_slowdown - 1):.1f} % "
                    f"(8192 tok; 512 tok {100 * f.prefill_512_cut:.0f} % / "
                    f"{100 * (f.prefill_512_slowdown - 1):.1f} %), decode {100 * f.decode_cut:.0f} % / "
                    f"{100 * (f.decode_slowdown - 1):.1f} %, "
                    f"e2e code {100 * (f.code_e2e_slowdown - 1):.1f} %, "
                    f"conv {100 * (f.conv_e2e_slowdown - 1):.1f} %",
                    "not measured: the traces never change the clock",
                    "up to ~20 % less peak for <= ~7 % slowdown (per-clock table not found)",
                )
            )
        for r in runs:
            if r.accuracy is not None:
                a = r.accuracy
                out.append(
                    (
                        f"trace model accuracy ({r.name}, held-out input sizes)",
                        f"max |error| {100 * a.max_error:.1f} %, mean {100 * a.mean_abs_error:.1f} %; "
                        f"fitted on all: worst phase {100 * a.fitted_max_phase_error:.1f} %",
                        ", ".join(f"{g.group}({g.input_tokens}) {100 * g.error:+.1f} %" for g in a.groups),
                        "not published (3 % MAPE for the row replication, not per phase)",
                    )
                )
            if r.replay is not None:
                x = r.replay
                out.append(
                    (
                        f"replay peak-to-mean ({r.name})",
                        f"{x.model_peak_to_mean:.2f} at 10 Hz, {x.model_peak_to_mean_1s:.2f} on 1 s "
                        f"(engine {x.perf}; busy {100 * x.model_busy_share:.0f} %)",
                        f"{x.trace_peak_to_mean:.2f} at 10 Hz, {x.trace_peak_to_mean_1s:.2f} on 1 s "
                        f"(busy {100 * x.trace_busy_share:.0f} %)",
                        "not published",
                    )
                )
        return out


@dataclass(frozen=True)
class TraceRunFigures:
    """One real run's characterisation figures (GPU sums against the run's GPUs x 400 W)."""

    name: str
    gpus: int
    peak_pct_of_tdp: float
    rise_pct_of_tdp: float
    rise_1s_pct_of_tdp: float
    head_over_rest: float
    """Largest, over input-size groups, of the head's mean power over the rest's (1: no prompt spike)."""
    gpu_peak_w: float
    level_small_w: float
    level_large_w: float
    accuracy: RunAccuracy | None
    replay: Replay | None


def _peak_span(peaks: Sequence[EnginePeak], what: str) -> str:
    if not peaks:
        return "-"
    first, last = peaks[0], peaks[-1]
    size = {"prompt": "prompt_tokens", "batch": "batch", "output": "output_tokens"}[what]
    return (
        f"server peak {first.peak_server_w / 1e3:.2f} kW ({what} {getattr(first, size)}) -> "
        f"{last.peak_server_w / 1e3:.2f} kW ({what} {getattr(last, size)}); GPU {first.peak_gpu_w:.0f} -> "
        f"{last.peak_gpu_w:.0f} W"
    )


# --------------------------------------------------------------------------------------------------


def _row_figures(run: RowRun, start_s: float, duration_s: float, skip_s: float) -> RowFigures:
    sample = run.sample_s
    first = min(round(skip_s / sample), max(run.power_w.size - 2, 0))
    last = min(round(duration_s / sample), run.power_w.size)
    power = run.power_w[first:last]
    per = max(1, round(2.0 / sample))
    n = power.size // per
    telemetry = power[: n * per].reshape(n, per).mean(axis=1) if n else power
    return RowFigures(
        servers=run.servers,
        start_s=start_s,
        duration_s=duration_s,
        skipped_s=first * sample,
        provisioned_w=run.provisioned_w,
        peak_w=float(run.power_w[:last].max()),
        rise_40s_w=largest_rise(power, sample, 40.0),
        rise_40s_telemetry_w=largest_rise(telemetry, per * sample, 40.0),
    )


def simulate_row(
    servers: int = 40,
    *,
    duration_s: float = 86_400.0,
    start_s: float = 0.0,
    peak_rps_per_server: float = 0.9,
    sizes: str = "synthetic:kind=code",
    design: str = "baseline-a100",
    perf: str | None = None,
    seed: int = 0,
) -> RowRun:
    """The un-oversubscribed row (budget = its own servers' rated power, controller ``none``)."""
    base = load_requests(sizes, rate_rps=1.0, duration_s=3600.0, seed=seed)
    spec = RowSpec(servers=servers, budget_servers=servers, design=design)
    workload = RowWorkload(
        base=base, peak_rps_per_server=peak_rps_per_server, duration_s=duration_s, start_s=start_s, seed=seed
    )
    return RowSimulator(spec, workload, parse_controller("none"), perf=perf).run()


def _engine_peak(
    power: PowerModel, perf: PerfModel, label: str, prompt: int, output: int, batch: int
) -> EnginePeak:
    llm_model = get_model("llama2-70b")
    machine = get_machine("a100-80gb")
    sim = ClusterSimulator(make_design("baseline-a100", machines=1), llm_model, {machine.name: perf})
    requests = LlmRequests(
        label,
        np.zeros(batch),
        np.full(batch, prompt, dtype=np.int64),
        np.full(batch, output, dtype=np.int64),
    )
    sim.start(requests)
    sim.record_phases()
    sim.advance(math.inf)
    log = np.asarray(sim.phase_log, dtype=np.float64)
    end = float(np.nanmax(sim.result().completion_s))
    meter = RowMeter(power, 1, 0.1)
    meter.add(0.0, end, log, np.full(1, power.clocks.max_mhz), np.full(1, power.clocks.tdp_w))
    # A bin shorter than the iteration it holds is exact; the last one is partial, so it is left out when
    # there are others.
    bins = max(1, int(end / 0.1))
    # The GPUs' own power per bin (the meter's energy holds the GPUs and the idle rest of the server); the
    # server figures are for a server that stays busy (the rest at its busy level), since one request is
    # too short for the rest of the machine to follow (its 30 s lag).
    gpus = (meter.energy[:bins] / 0.1 - power.server.rest_idle_w) / power.server.gpus
    busy = power.server.gpus * gpus + power.server.rest_busy_w
    return EnginePeak(label, prompt, output, batch, float(busy.max()), float(gpus.max()), float(busy.mean()))


def _typical(kind: str) -> tuple[int, int]:
    sample = load_requests(f"synthetic:kind={kind}", rate_rps=10.0, duration_s=600.0, seed=0)
    return int(np.median(sample.prompt_tokens)), int(np.median(sample.output_tokens))


def _frequency(power: PowerModel, perf: PerfModel) -> tuple[FrequencyPoint, ...]:
    code, conv = _typical("code"), _typical("conv")
    f_max = power.clocks.max_mhz

    def e2e(mhz: float, prompt: int, output: int) -> float:
        p_time = perf.prompt_time_s(prompt)
        d_time = perf.token_time_s(1) * max(output - 1, 0)
        base = p_time + d_time
        slowed = p_time * float(power.slowdown(PREFILL, float(prompt), mhz)) + d_time * float(
            power.slowdown(DECODE, 1.0, mhz)
        )
        return slowed / base

    points: list[FrequencyPoint] = []
    for mhz in CLOCKS_MHZ:

        def cut(phase: int, load: float, at: float = mhz) -> float:
            ph = np.array([phase])
            ld = np.array([load])
            full = float(power.gpu_power_w(ph, ld, np.array([f_max]))[0])
            now = float(power.gpu_power_w(ph, ld, np.array([at]))[0])
            return 1 - now / full

        points.append(
            FrequencyPoint(
                mhz=mhz,
                prefill_bound_cut=cut(PREFILL, 8192.0),
                prefill_512_cut=cut(PREFILL, 512.0),
                decode_cut=cut(DECODE, 16.0),
                prefill_bound_slowdown=float(power.slowdown(PREFILL, 8192.0, mhz)),
                prefill_512_slowdown=float(power.slowdown(PREFILL, 512.0, mhz)),
                decode_slowdown=float(power.slowdown(DECODE, 16.0, mhz)),
                code_e2e_slowdown=e2e(mhz, *code),
                conv_e2e_slowdown=e2e(mhz, *conv),
            )
        )
    return tuple(points)


def _effect(points: Sequence[ScalingPoint], by: str, source: str) -> TraceEffect:
    groups: dict[tuple[str, str], list[ScalingPoint]] = {}
    for p in points:
        if "A100" in p.system:
            groups.setdefault((p.model, p.system), []).append(p)
    if not groups:
        raise ConfigError(f"{source}: no A100 groups")
    ratios = []
    curves: list[dict[int, float]] = []
    for members in groups.values():
        curve = {int(getattr(p, by)): p.mean_power_w for p in members}
        sizes = sorted(curve)
        ratios.append(curve[sizes[-1]] / curve[sizes[0]])
        curves.append(curve)
    common = sorted(set.intersection(*(set(c) for c in curves)))
    medians = [float(np.median([c[s] for c in curves])) for s in common]
    return TraceEffect(
        source=source,
        groups=len(groups),
        smallest=common[0],
        largest=common[-1],
        ratio=float(np.median(ratios)),
        peak_size=common[int(np.argmax(medians))],
    )


def _trace_figures(run: TraceRun, *, replay: bool) -> TraceRunFigures:
    p = run.profile
    tdp = A100_TDP_W * run.gpus
    groups = run.groups
    can_replay = replay and run.name in ("llama2-70b", "llama2-13b")
    return TraceRunFigures(
        name=run.name,
        gpus=run.gpus,
        peak_pct_of_tdp=100 * p.inference_peak_sum_w / tdp,
        rise_pct_of_tdp=100 * p.rise.rise_w / tdp,
        rise_1s_pct_of_tdp=100 * p.rise_1s.rise_w / tdp,
        head_over_rest=max(g.head_mean_w / g.rest_mean_w for g in groups),
        gpu_peak_w=p.gpu_peak_w,
        level_small_w=groups[0].energy_mean_w,
        level_large_w=groups[-1].energy_mean_w,
        accuracy=trace_accuracy(run),
        replay=replay_trace(run) if can_replay else None,
    )


def characterize(
    *,
    row_run: RowRun | None = None,
    row_servers: int = 40,
    row_duration_s: float = 86_400.0,
    row_start_s: float = 0.0,
    row_skip_s: float = 600.0,
    row_peak_rps_per_server: float = 0.9,
    row_sizes: str = "synthetic:kind=code",
    simulate: bool = True,
    traces_root: str | Path | None = None,
    replay: bool = True,
    model: str = "llama2-70b",
    machine: str = "a100-80gb",
    seed: int = 0,
) -> Characterization:
    """The issue's characterisation (module docstring). ``row_run``: an already simulated row to read
    (then ``row_duration_s``/``row_start_s`` describe it); ``simulate=False`` skips the row altogether.
    ``traces_root``: the data root holding ``llm-gpu-power/`` (default the data root; without it the
    trace column says why). ``replay``: also replay the Llama-2 traces through the engine."""
    if not row_duration_s > 0:
        raise ConfigError(f"row duration must be positive, got {row_duration_s!r}")
    if row_skip_s < 0:
        raise ConfigError(f"row skip must not be negative, got {row_skip_s!r}")
    # The warm-up left out of the row's figures; a short window keeps at least half of itself.
    row_skip_s = min(row_skip_s, row_duration_s / 2)
    power = power_model(machine, model)
    perf = load_perf_model("profile", get_model(model), get_machine(machine), 8)

    row: RowFigures | None = None
    if row_run is None and simulate:
        row_run = simulate_row(
            row_servers,
            duration_s=row_duration_s,
            start_s=row_start_s,
            peak_rps_per_server=row_peak_rps_per_server,
            sizes=row_sizes,
            seed=seed,
        )
    if row_run is not None:
        row = _row_figures(row_run, row_start_s, row_duration_s, row_skip_s)

    prompt_peaks = tuple(_engine_peak(power, perf, f"prompt {n}", n, 16, 1) for n in PROMPT_SIZES)
    batch_peaks = tuple(_engine_peak(power, perf, f"batch {b}", 512, 16, b) for b in BATCH_SIZES)
    output_peaks = tuple(_engine_peak(power, perf, f"output {o}", 512, o, 1) for o in OUTPUT_SIZES)
    one = np.array([PREFILL])
    prefill_w = float(power.gpu_power_w(one, np.array([2048.0]), np.array([power.clocks.max_mhz]))[0])
    prefill_demand = float(power.demand_w(one, np.array([2048.0]))[0])
    decode_w = float(
        power.gpu_power_w(np.array([DECODE]), np.array([16.0]), np.array([power.clocks.max_mhz]))[0]
    )

    runs: tuple[TraceRunFigures, ...] = ()
    input_effect = output_effect = None
    missing: str | None = None
    try:
        if traces_root is None:
            from strato.traces.datasets import data_root

            traces_root = data_root()
        folder = Path(traces_root) / "llm-gpu-power" / "plots"
        if not folder.is_dir():
            raise ConfigError(f"{folder} is missing")
        runs = tuple(
            _trace_figures(r, replay=replay) for r in trace_runs(folder / "parameter-scale-input-test")
        )
        input_effect = _effect(
            power_scaling(read_gpu_phases(folder / "input-test/all-input-stats.csv")),
            "input_tokens",
            "input-test/all-input-stats.csv",
        )
        output_effect = _effect(
            power_scaling(read_gpu_phases(folder / "output-test/all-output-stats.csv")),
            "output_tokens",
            "output-test/all-output-stats.csv",
        )
    except ConfigError as exc:
        if runs:
            raise
        missing = str(exc)

    return Characterization(
        model=model,
        machine=machine,
        row=row,
        frequency=_frequency(power, perf),
        prompt_peaks=prompt_peaks,
        batch_peaks=batch_peaks,
        output_peaks=output_peaks,
        prefill_w=prefill_w,
        prefill_demand_w=prefill_demand,
        decode_w=decode_w,
        runs=runs,
        input_effect=input_effect,
        output_effect=output_effect,
        traces_missing=missing,
        notes=power.notes,
    )
