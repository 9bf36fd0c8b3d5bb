"""GPU power traces: the nvidia-smi and per-phase readers (strict), and the characterisation on the real
A100 traces of ``llm-gpu-power``."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest

from data_helpers import shared_data
from strato.errors import ConfigError, TraceFormatError
from strato.traces.gpu_power import (
    GpuPhases,
    GpuPowerTrace,
    TraceProfile,
    align_clock,
    characterise,
    find_runs,
    group_phases,
    largest_rise,
    power_scaling,
    read_gpu_phases,
    read_nvidia_smi,
)

HEADER = "timestamp, power.draw [W], utilization.gpu [%], utilization.memory [%]"
T0 = dt.datetime(2024, 4, 5, 6, 17, 19, 635000)


def stamp(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]


def bursts(samples: int, gpus: int, *, period: float = 0.104, within: float = 0.004) -> list[tuple[str, int]]:
    """(timestamp, gpu) rows as nvidia-smi prints them: one burst of ``gpus`` rows per sample."""
    return [(stamp(k * period + g * within), g) for k in range(samples) for g in range(gpus)]


def power_of(k: int, g: int) -> float:
    return 50.0 + 10.0 * g + 0.25 * k


def write(tmp_path: Path, text: str, name: str = "nvidia-smi.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def smi_file(
    tmp_path: Path, samples: int = 6, gpus: int = 2, *, nounits: bool = False, name: str = "nvidia-smi.csv"
) -> Path:
    lines = [HEADER]
    for k, (when, g) in enumerate(bursts(samples, gpus)):
        power = power_of(k // gpus, g)
        lines.append(f"{when}, {power:.2f}, 7, 3" if nounits else f"{when}, {power:.2f} W, 7 %, 3 %")
    return write(tmp_path, "\n".join(lines) + "\n", name)


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(TraceFormatError) as info:
        read_nvidia_smi(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


# ---------------------------------------------------------------------------------------------------
# nvidia-smi reader: good files
# ---------------------------------------------------------------------------------------------------


def test_interleaved_gpus_are_told_apart_by_their_bursts(tmp_path: Path) -> None:
    trace = read_nvidia_smi(smi_file(tmp_path, samples=6, gpus=3))
    assert isinstance(trace, GpuPowerTrace)
    assert (trace.gpus, trace.gpu_from, len(trace)) == (3, "bursts", 18)
    assert trace.gpu.tolist() == [0, 1, 2] * 6
    t1, p1 = trace.per_gpu(1)
    assert p1.tolist() == [power_of(k, 1) for k in range(6)]
    assert np.allclose(np.diff(t1), 0.104)
    # Local wall clock read as UTC.
    assert trace.start_s == pytest.approx(T0.replace(tzinfo=dt.UTC).timestamp())
    assert trace.columns["utilization.gpu"].tolist() == [7.0] * 18
    assert trace.sample_period_s == pytest.approx(0.104)
    assert not trace.partial_last_line


def test_nounits_reads_the_same_values(tmp_path: Path) -> None:
    with_units = read_nvidia_smi(smi_file(tmp_path))
    plain = read_nvidia_smi(smi_file(tmp_path, nounits=True, name="nounits.csv"))
    assert np.array_equal(plain.power_w, with_units.power_w)
    assert np.array_equal(plain.gpu, with_units.gpu)
    # No unit anywhere: the base unit.
    path = write(tmp_path, f"timestamp, power.draw\n{stamp(0)}, 61.5\n{stamp(0.1)}, 62.5\n", "bare.csv")
    assert read_nvidia_smi(path).power_w.tolist() == [61.5, 62.5]


def test_index_column_in_any_order_and_value_units_convert(tmp_path: Path) -> None:
    text = (
        "index, power.draw [W], clocks.sm [MHz], timestamp\n"
        f"1, 60000 mW, 1.41 GHz, {stamp(0)}\n"
        f"0, 55.5 W, 1410 MHz, {stamp(0.001)}\n"
        f"1, 0.2 kW, [N/A], {stamp(0.1)}\n"
        f"0, [N/A], 1275 MHz, {stamp(0.101)}\n"
    )
    trace = read_nvidia_smi(write(tmp_path, text))
    assert (trace.gpus, trace.gpu_from, trace.gpu_ids) == (2, "index", ("0", "1"))
    assert trace.gpu.tolist() == [1, 0, 1, 0]
    assert trace.power_w[:3].tolist() == [60.0, 55.5, 200.0] and math.isnan(trace.power_w[3])
    assert trace.per_gpu(0)[1].tolist() == [55.5]  # [N/A] left out
    clocks = trace.columns["clocks.sm"]
    assert clocks[0] == pytest.approx(1410.0) and clocks[1] == 1410.0 and math.isnan(clocks[2])
    with pytest.raises(ConfigError, match="gpus=3 but the index column names 2"):
        read_nvidia_smi(write(tmp_path, text, "again.csv"), gpus=3)


def test_single_gpu_and_given_gpu_count(tmp_path: Path) -> None:
    lines = [HEADER] + [f"{stamp(0.104 * k)}, {50 + k}.00 W, 0 %, 0 %" for k in range(10)]
    trace = read_nvidia_smi(write(tmp_path, "\n".join(lines) + "\n"))
    assert (trace.gpus, trace.gpu.tolist()) == (1, [0] * 10)
    # With gpus=N the positions in the burst number the rows, even when the timing is too irregular to infer.
    # A burst boundary as short as the gaps inside bursts (0.010 -> 0.015) leaves no regular structure.
    times = (0, 0.005, 0.010, 0.015, 0.1, 0.105, 0.2, 0.205)
    irregular = [HEADER] + [f"{stamp(t)}, 60 W, 0 %, 0 %" for t in times]
    path = write(tmp_path, "\n".join(irregular) + "\n", "irregular.csv")
    assert "pass gpus=N" in error_of(path)
    assert read_nvidia_smi(path, gpus=2).gpu.tolist() == [0, 1] * 4


def test_unterminated_partial_last_line_is_dropped_but_a_complete_bad_line_is_not(tmp_path: Path) -> None:
    good = smi_file(tmp_path, samples=3, gpus=2).read_text()
    # nvidia-smi killed mid-write: its 4 KiB block ends inside a line.
    partial = write(tmp_path, good + "2024/04/05 06:17:20.", "partial.csv")
    trace = read_nvidia_smi(partial)
    assert trace.partial_last_line and len(trace) == 6
    terminated = write(tmp_path, good + "2024/04/05 06:17:20.\n", "terminated.csv")
    assert "row 8, column power.draw [W]" in error_of(terminated)


def test_row_power_sums_gpus_on_one_grid(tmp_path: Path) -> None:
    trace = read_nvidia_smi(smi_file(tmp_path, samples=11, gpus=2))
    grid, total = trace.row_power(resample_hz=20.0)
    # Grid from GPU 1's first sample to GPU 0's last; each GPU linear in time.
    assert grid[0] == pytest.approx(trace.per_gpu(1)[0][0])
    assert grid[-1] <= trace.per_gpu(0)[0][-1] + 1e-9
    t0, p0 = trace.per_gpu(0)
    t1, p1 = trace.per_gpu(1)
    assert np.allclose(total, np.interp(grid, t0, p0) + np.interp(grid, t1, p1))
    assert np.allclose(np.diff(grid), 0.05)
    window = trace.window(trace.start_s + 0.2, trace.start_s + 0.4)
    assert window.gpu.tolist() == [0, 1, 0, 1]
    with pytest.raises(ConfigError, match="no GPU 2"):
        trace.per_gpu(2)


# ---------------------------------------------------------------------------------------------------
# nvidia-smi reader: every malformed input names file, row and column
# ---------------------------------------------------------------------------------------------------

ROW2 = f"{stamp(0)}, 58.67 W, 0 %, 0 %"
ROW3 = f"{stamp(0.104)}, 58.01 W, 0 %, 0 %"


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        (f"{ROW2}\n{ROW3}\n", "row 1, column timestamp", "no header"),
        ("time, power [W]\n1, 2\n", "row 1, column timestamp", "missing header"),
        (f"timestamp, utilization.gpu [%]\n{stamp(0)}, 3 %\n", "row 1, column power.draw", "no power column"),
        (f"timestamp, power.draw [V]\n{stamp(0)}, 5 V\n", "row 1, column power.draw [V]", "unknown unit [V]"),
        (
            f"{HEADER}\n{ROW2}\n{stamp(0.1)}, 58.67 V, 0 %, 0 %\n",
            "row 3, column power.draw [W]",
            "unknown unit 'V'",
        ),
        (
            f"{HEADER}\n{ROW2}\n{stamp(0.1)}, 58.67 W, abc %, 0 %\n",
            "row 3, column utilization.gpu [%]",
            "not a number",
        ),
        (f"{HEADER}\n{ROW2}\n{stamp(0.1)}, -3 W, 0 %, 0 %\n", "row 3, column power.draw [W]", "negative"),
        (
            f"{HEADER}\n{ROW2}\n{stamp(0.1)}, nan W, 0 %, 0 %\n",
            "row 3, column power.draw [W]",
            "not a finite",
        ),
        (f"{HEADER}\n{ROW3}\n{ROW2}\n", "row 3, column timestamp", "goes backwards"),
        (
            f"{HEADER}\n{ROW2}\n2024-04-05 6:17:19, 1 W, 0 %, 0 %\n",
            "row 3, column timestamp",
            "not a timestamp",
        ),
        (f"{HEADER}\n{ROW2}\n[N/A], 1 W, 0 %, 0 %\n", "row 3, column timestamp", "not a timestamp"),
        (
            f"{HEADER}\n{ROW2}\n{stamp(0.1)}, 58.67 W, 0 %\n",
            "row 3, column utilization.memory [%]",
            "truncated row",
        ),
        (f"{HEADER}\n{ROW2}, 9 %\n", "row 2, column 5", "5 fields, the header has 4"),
        (f"{HEADER}\n", "row 2", "no samples"),
        (
            f"timestamp, power.draw [W], power.draw [W]\n{stamp(0)}, 1 W, 1 W\n",
            "row 1, column power.draw",
            "twice",
        ),
        (
            f"index, timestamp, power.draw [W]\n0, {stamp(0)}, 1 W\nx, {stamp(0.1)}, 1 W\n",
            "row 3, column index",
            "GPU index",
        ),
        (
            f"timestamp, power.draw [W]\n{stamp(0)}, [N/A]\n{stamp(0.1)}, [N/A]\n",
            "row 2, column power.draw [W]",
            "[N/A]",
        ),
        (f"timestamp, power.draw [W]\n{stamp(0)}, 5 W W\n", "row 2, column power.draw [W]", "not a number"),
    ],
)
def test_malformed_nvidia_smi_files(tmp_path: Path, text: str, where: str, what: str) -> None:
    message = error_of(write(tmp_path, text))
    assert where in message and what in message, message


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert "empty file" in error_of(write(tmp_path, ""))
    with pytest.raises(TraceFormatError, match="missing file"):
        read_nvidia_smi(tmp_path / "absent.csv")


def test_bad_arguments(tmp_path: Path) -> None:
    path = smi_file(tmp_path)
    with pytest.raises(ConfigError, match="gpus must be"):
        read_nvidia_smi(path, gpus=0)
    assert "not a power column" in error_of(path, power_column="utilization.gpu")
    assert "row 1, column power.draw.instant" in error_of(path, power_column="power.draw.instant")
    with pytest.raises(ConfigError, match="resample_hz"):
        read_nvidia_smi(path).row_power(0.0)


# ---------------------------------------------------------------------------------------------------
# Phase tables
# ---------------------------------------------------------------------------------------------------

PHASE_HEADER = (
    "Timestamp,Phase,Runtime (s),GPU-0 Energy (mJ),GPU-1 Energy (mJ),Output Token Limit,"
    "Number of Input Tokens,Iteration,Model,Number of GPUs,Prompt,Batch Size,GPU Energy (J)"
)


def phase_table(tmp_path: Path, rows: list[str], header: str = PHASE_HEADER) -> Path:
    return write(tmp_path, header + "\n" + "\n".join(rows) + "\n", "phases.csv")


GOOD_PHASES = [
    "1712315871.5,tokenizer,0.5,30000,20000,32,0,0,m,2,startup,32,50.0",
    "1712315872.0,model load,10.0,600000,650000,32,0,0,m,2,startup,32,1250.0",
    # A quoted prompt spanning three lines, with commas in it.
    '1712315882.0,start-inference-A-0,2.0,400000,300000,32,9,0,m,2,"int main(a, b)\n{\n}",32,700.0',
    "1712315884.0,start-inference-A-1,4.0,800000,880000,32,9,1,m,2,x,32,1680.0",
]


def test_phase_table_with_per_gpu_energy_and_multiline_prompts(tmp_path: Path) -> None:
    phases = read_gpu_phases(phase_table(tmp_path, GOOD_PHASES))
    assert isinstance(phases, GpuPhases)
    assert phases.name == ("tokenizer", "model load", "start-inference-A-0", "start-inference-A-1")
    assert phases.line.tolist() == [2, 3, 4, 7]
    assert phases.start_s is not None and phases.start_s[0] == 1712315871.5
    assert phases.output_is_limit and phases.output_tokens.tolist() == [32] * 4
    assert phases.is_inference.tolist() == [False, False, True, True]
    assert phases.mean_power_w is not None
    assert phases.mean_power_w[2].tolist() == [200.0, 150.0]
    assert phases.mean_power_per_gpu_w[3] == pytest.approx(1680.0 / 4.0 / 2)
    assert phases.iteration is not None and phases.iteration.tolist() == [0, 0, 0, 1]
    assert phases.index("model load") == 1


def test_aggregate_table_without_timestamps_or_per_gpu_energy(tmp_path: Path) -> None:
    header = (
        "Phase,Runtime (s),GPU Energy (J),Number of Output Tokens,Number of Input Tokens,Iteration,Model,"
        "Number of GPUs,Batch Size,System"
    )
    rows = [
        "inference-A-0,2.0,400.0,32,8,0,M,1,32,Swing",
        "inference-A-1,1.0,150.0,32,8,1,M,1,32,Swing",
        "inference-A-2,1.0,170.0,32,8,2,M,1,32,Swing",
        "inference-B-1,2.0,600.0,32,64,1,M,2,32,Swing",
    ]
    phases = read_gpu_phases(phase_table(tmp_path, rows, header))
    assert phases.start_s is None and phases.gpu_energy_j is None and not phases.output_is_limit
    points = power_scaling(phases)
    assert [(p.input_tokens, p.gpus, p.phases) for p in points] == [(8, 1, 2), (64, 2, 1)]
    # Iteration 0 (warm-up) left out; the median of 150 W and 170 W.
    assert points[0].mean_power_w == pytest.approx(160.0)
    assert points[1].mean_power_w == pytest.approx(150.0)
    with pytest.raises(ConfigError, match="no Timestamp column"):
        align_clock(read_nvidia_smi(smi_file(tmp_path)), phases)


@pytest.mark.parametrize(
    ("change", "where", "what"),
    [
        (
            (3, "start-inference-A-1,4.0", "start-inference-A-1,four"),
            "row 7, column Runtime (s)",
            "not a number",
        ),
        ((3, "start-inference-A-1,4.0", "start-inference-A-1,0"), "row 7, column Runtime (s)", "positive"),
        ((3, "1712315884.0", "1712315880.0"), "row 7, column Timestamp", "goes backwards"),
        ((3, ",2,x,", ",2,x,extra,"), "row 7, column 14", "14 fields, the header has 13"),
        ((3, ",32,1680.0", ",32"), "row 7, column GPU Energy (J)", "truncated row"),
        ((3, "1680.0", "1690.0"), "row 7, column GPU Energy (J)", "differs from the per-GPU sum"),
        ((3, ",m,2,x,", ",m,3,x,"), "row 7, column Number of GPUs", "3 GPUs but 2 GPU energy columns"),
        ((3, ",32,9,1,", ",32,9.5,1,"), "row 7, column Number of Input Tokens", "whole number"),
        ((3, ",32,9,1,", ",32,,1,"), "row 7, column Number of Input Tokens", "empty"),
        ((1, "model load", ""), "row 3, column Phase", "empty phase name"),
    ],
)
def test_malformed_phase_tables(tmp_path: Path, change: tuple[int, str, str], where: str, what: str) -> None:
    k, old, new = change
    rows = list(GOOD_PHASES)
    assert old in rows[k]
    rows[k] = rows[k].replace(old, new, 1)
    path = phase_table(tmp_path, rows)
    with pytest.raises(TraceFormatError) as info:
        read_gpu_phases(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    assert where in message and what in message, message


def test_phase_table_header_errors(tmp_path: Path) -> None:
    no_runtime = PHASE_HEADER.replace("Runtime (s)", "Duration")
    with pytest.raises(TraceFormatError, match=r"row 1, column Runtime \(s\)"):
        read_gpu_phases(phase_table(tmp_path, GOOD_PHASES, no_runtime))
    no_output = PHASE_HEADER.replace("Output Token Limit", "Tokens Out")
    with pytest.raises(TraceFormatError, match="row 1, column Number of Output Tokens"):
        read_gpu_phases(phase_table(tmp_path, GOOD_PHASES, no_output))
    with pytest.raises(TraceFormatError, match="row 2: no phases"):
        read_gpu_phases(phase_table(tmp_path, [], PHASE_HEADER))
    with pytest.raises(TraceFormatError, match="empty file"):
        read_gpu_phases(write(tmp_path, "", "empty.csv"))


def test_a_start_pinned_by_its_neighbours_is_repaired_only_on_request(tmp_path: Path) -> None:
    rows = list(GOOD_PHASES)
    # The public Llama-2-13B table's fault: a start that lost its leading digit.
    rows[2] = rows[2].replace("1712315882.0", "712315882.0")
    path = phase_table(tmp_path, rows)
    with pytest.raises(TraceFormatError, match="row 4, column Timestamp: Timestamp goes backwards"):
        read_gpu_phases(path)
    phases = read_gpu_phases(path, repair_starts=True)
    assert phases.repaired == (4,)
    assert phases.start_s is not None and phases.start_s[2] == pytest.approx(1712315882.0)
    # Neighbours that disagree by more than a second pin nothing down.
    rows[3] = rows[3].replace("1712315884.0", "1712315890.0")
    with pytest.raises(TraceFormatError, match="row 4, column Timestamp"):
        read_gpu_phases(phase_table(tmp_path, rows), repair_starts=True)


# ---------------------------------------------------------------------------------------------------
# Characterisation on constructed data
# ---------------------------------------------------------------------------------------------------


def test_largest_rise_within_a_window() -> None:
    t = np.arange(8.0)
    p = np.array([10.0, 50.0, 20.0, 30.0, 5.0, 45.0, 40.0, 100.0])
    whole = largest_rise(t, p, window_s=100.0)
    assert (whole.rise_w, whole.from_s, whole.to_s) == (95.0, 4.0, 7.0)
    assert whole.pct_of_peak == pytest.approx(95.0)
    short = largest_rise(t, p, window_s=1.0)
    assert (short.rise_w, short.from_s, short.to_s) == (60.0, 6.0, 7.0)
    assert largest_rise(t, p, window_s=0.0).rise_w == 0.0
    falling = largest_rise(t, p[::-1].copy(), window_s=2.0)
    assert (falling.rise_w, falling.from_w, falling.to_w) == (30.0, 20.0, 50.0)  # not 5 -> 50: 3 steps
    with pytest.raises(ConfigError, match="evenly spaced"):
        largest_rise(np.array([0.0, 1.0, 3.0]), np.ones(3))


def test_align_clock_and_characterise_recover_a_known_layout(tmp_path: Path) -> None:
    # Two GPUs sampled every 0.1 s for 60 s of local time; phases on a clock 5 h ahead (UTC-5).
    zone = 5 * 3600.0
    period, samples = 0.1, 600
    local0 = T0.replace(tzinfo=dt.UTC).timestamp()

    def level(t_local: float, g: int) -> float:
        s = t_local - local0
        if s < 10:
            return 55.0 + g  # idle
        if s < 20:
            return 60.0 + g  # model load
        if 22 <= s < 30:
            return 150.0 + 10 * g  # inference A
        if 30 <= s < 44:
            return 300.0 if s < 31 else 200.0  # inference B: a 1 s head above the rest
        return 58.0

    lines = [HEADER]
    for k in range(samples):
        for g in range(2):
            when = k * period + 0.003 * g
            lines.append(f"{stamp(when)}, {level(local0 + when, g):.2f} W, 0 %, 0 %")
    trace = read_nvidia_smi(write(tmp_path, "\n".join(lines) + "\n"))
    unix0 = local0 + zone

    def row(start: float, name: str, runtime: float, w0: float, w1: float, it: int) -> str:
        mj = (round(w0 * runtime * 1000), round(w1 * runtime * 1000))
        total = (mj[0] + mj[1]) / 1000
        return f"{unix0 + start},{name},{runtime},{mj[0]},{mj[1]},32,9,{it},m,2,p,32,{total}"

    table = phase_table(
        tmp_path,
        [
            row(10.0, "tokenizer", 0.1, 60, 61, 0),
            row(10.1, "model load", 9.9, 60, 61, 0),
            row(22.0, "start-inference-A-0", 8.0, 150, 160, 0),
            row(30.0, "start-inference-B-0", 14.0, 300 / 14 + 200 * 13 / 14, 300 / 14 + 200 * 13 / 14, 0),
        ],
    )
    phases = read_gpu_phases(table)
    alignment = align_clock(trace, phases)
    assert alignment.zone_offset_s == zone
    assert abs(alignment.residual_s) <= 0.1 and alignment.phases == 2
    profile = characterise(trace, phases, alignment=alignment)
    assert isinstance(profile, TraceProfile)
    assert profile.idle.per_gpu_w == (55.0, 56.0)
    assert profile.model_load is not None and profile.model_load.per_gpu_w == (60.0, 61.0)
    a, b = profile.phases
    assert a.trace_mean_per_gpu_w == pytest.approx((150.0, 160.0), abs=0.5)
    assert a.trace_mean_w == pytest.approx(a.energy_mean_w, rel=0.01)
    # B's head (max(0.5, 0.2 x 14) = 2.8 s) holds the 1 s step at 300 W; the rest is flat at 200 W.
    assert b.head_s == pytest.approx(2.8)
    assert b.head_peak_w == pytest.approx(300.0) and b.rest_mean_w == pytest.approx(200.0, abs=1.0)
    assert b.head_mean_w > b.rest_mean_w + 30
    assert profile.inference_peak_sum_w == pytest.approx(600.0)
    # The inference part starts at 2 x 150..160 W: the largest 40 s rise is up to the 600 W step.
    assert profile.rise.rise_w == pytest.approx(600.0 - 310.0, abs=1.0)
    groups = group_phases(profile)
    assert [g.group for g in groups] == ["A", "B"]


# ---------------------------------------------------------------------------------------------------
# The real A100 traces
# ---------------------------------------------------------------------------------------------------

RUNS = {
    # raw_stats folder: (phase table, GPUs)
    "llama2-13b": ("Llama-2-13b-chat-hf-argonne-swing-1.csv", 1),
    "llama2-70b": ("Llama-2-70b-chat-hf-argonne-swing-4.csv", 4),
    "mixtral-8x7b": ("Mixtral-8x7B-v0.1-argonne-swing-3.csv", 3),
    "falcon-40b": ("falcon-40b-argonne-swing-3.csv", 3),
}


def real_folder() -> Path:
    folder = shared_data() / "llm-gpu-power" / "plots" / "parameter-scale-input-test"
    if not folder.is_dir():
        pytest.skip(f"real GPU power traces {folder} are absent (the data folder: strato data list)")
    return folder


@pytest.fixture(scope="module")
def real_profiles() -> dict[str, tuple[GpuPowerTrace, GpuPhases, TraceProfile]]:
    folder = real_folder()
    result = {}
    for trace_path, table_path in find_runs(folder):
        trace = read_nvidia_smi(trace_path)
        phases = read_gpu_phases(table_path, repair_starts=True)
        result[trace_path.parts[-4]] = (trace, phases, characterise(trace, phases))
    return result


@pytest.mark.shared_data
def test_real_runs_pair_with_their_tables_and_gpu_counts(
    real_profiles: dict[str, tuple[GpuPowerTrace, GpuPhases, TraceProfile]],
) -> None:
    assert set(real_profiles) == set(RUNS)
    for model, (trace, phases, _) in real_profiles.items():
        table, gpus = RUNS[model]
        assert Path(phases.source).name == table
        assert (trace.gpus, trace.gpu_from) == (gpus, "bursts"), model
        assert int(phases.gpus[0]) == gpus
        # Every published trace was cut mid-line when nvidia-smi was stopped.
        assert trace.partial_last_line, model
        assert 0.100 < trace.sample_period_s < 0.125, model
    # Only the 13B table has the start with a lost leading digit (line 49, start-inference-G-3).
    assert real_profiles["llama2-13b"][1].repaired == (49,)
    assert all(real_profiles[m][1].repaired == () for m in RUNS if m != "llama2-13b")


@pytest.mark.shared_data
def test_real_traces_idle_and_peak_levels(
    real_profiles: dict[str, tuple[GpuPowerTrace, GpuPhases, TraceProfile]],
) -> None:
    for model, (trace, _, profile) in real_profiles.items():
        assert all(50.0 <= w <= 60.0 for w in profile.idle.per_gpu_w), (model, profile.idle)
        assert profile.model_load is not None
        assert profile.idle.mean_w < profile.model_load.mean_w < profile.idle.mean_w + 10, model
        assert float(np.nanmax(trace.power_w)) <= 480.0, model
        assert profile.gpu_peak_w == float(np.nanmax(trace.power_w))
    assert real_profiles["llama2-70b"][2].gpu_peak_w == pytest.approx(472.35)
    # Llama-2-13B on one GPU: short prompts ~200 W, long ones at the 400 W board limit.
    groups = {g.group: g for g in group_phases(real_profiles["llama2-13b"][2])}
    assert 185 < groups["A"].energy_mean_w < 215 and 385 < groups["I"].energy_mean_w < 405


@pytest.mark.shared_data
def test_real_clock_offset_is_us_central_daylight_time(
    real_profiles: dict[str, tuple[GpuPowerTrace, GpuPhases, TraceProfile]],
) -> None:
    for model, (_, _, profile) in real_profiles.items():
        a = profile.alignment
        assert a.zone_offset_s == 5 * 3600, model
        assert abs(a.residual_s) < 1.0, model
        assert a.rms_w < 12.0, model


@pytest.mark.shared_data
def test_real_phase_means_agree_with_the_energy_counters(
    real_profiles: dict[str, tuple[GpuPowerTrace, GpuPhases, TraceProfile]],
) -> None:
    """Sampled means against energy counters. Tolerances from the data: where GPUs take turns (the
    multi-GPU runs split the model by layers) one GPU's readings in a phase alternate between ~75 and
    ~400 W, a coefficient of variation up to ~0.9 (0.6 at the median), so a mean of n readings carries a
    relative error of order 1/sqrt(n); the worst phase has 0.79/sqrt(n) (Falcon-40B, 3.3 s phases with
    28 readings per GPU: 15 %). Over a whole run the sampling error averages out: within 0.4 % on all
    four, 1.5 % allowed; the median phase is within 2.7 %, 3 % allowed."""
    for model, (_, phases, profile) in real_profiles.items():
        inference = int(phases.is_inference.sum())
        # Every inference phase inside the trace; the 13B and Falcon traces stop inside their last phase.
        assert len(profile.phases) >= inference - 1, model
        rel = np.array([p.trace_mean_w / p.energy_mean_w - 1 for p in profile.phases])
        samples = np.array([p.samples for p in profile.phases])
        assert samples.min() >= 10, model
        assert (np.abs(rel) <= 1 / np.sqrt(samples)).all(), (model, rel, samples)
        assert np.median(np.abs(rel)) <= 0.03, model
        sampled = sum(p.trace_mean_w * p.runtime_s for p in profile.phases)
        counted = sum(p.energy_mean_w * p.runtime_s for p in profile.phases)
        assert sampled / counted == pytest.approx(1.0, abs=0.015), model


@pytest.mark.shared_data
def test_real_traces_show_no_separate_prefill_spike(
    real_profiles: dict[str, tuple[GpuPowerTrace, GpuPhases, TraceProfile]],
) -> None:
    """At ~10 samples/s a phase's head is at the level of its rest: the prompt's share of a request's
    work is not seen as a spike of its own here; power follows the prompt length for the whole phase."""
    for model, (_, _, profile) in real_profiles.items():
        for group in group_phases(profile):
            assert group.head_mean_w == pytest.approx(group.rest_mean_w, rel=0.10), (model, group)
        by_size = group_phases(profile)
        assert by_size[-1].energy_mean_w > 1.5 * by_size[0].energy_mean_w, model


@pytest.mark.shared_data
def test_real_trace_level_figures(
    real_profiles: dict[str, tuple[GpuPowerTrace, GpuPhases, TraceProfile]],
) -> None:
    one_gpu = real_profiles["llama2-13b"][2]
    assert 1.1 < one_gpu.peak_to_mean < 1.3
    for model in ("llama2-70b", "mixtral-8x7b", "falcon-40b"):
        # GPUs taking turns: the sum swings far more than one GPU does.
        assert real_profiles[model][2].peak_to_mean > 1.7, model
    for model, (_, _, profile) in real_profiles.items():
        # These runs step through prompt sizes within minutes: every 40 s rise is far above
        # production's 11.8 %.
        assert 40.0 < profile.rise.pct_of_peak < 80.0, model
        assert profile.rise_1s.pct_of_peak <= profile.rise.pct_of_peak + 1.0, model
        assert profile.rise.to_s - profile.rise.from_s <= 40.0


@pytest.mark.shared_data
def test_real_aggregates_mean_power_grows_with_prompt_and_output_length() -> None:
    root = shared_data() / "llm-gpu-power" / "plots"
    if not root.is_dir():
        pytest.skip(f"real GPU power tables {root} are absent (the data folder: strato data list)")
    inputs = power_scaling(read_gpu_phases(root / "input-test" / "all-input-stats.csv"))
    outputs = power_scaling(read_gpu_phases(root / "output-test" / "all-output-stats.csv"))
    for points, attribute in ((inputs, "input_tokens"), (outputs, "output_tokens")):
        for system, limit in (("Swing AMD+A100", 400.0), ("Palmetto Intel+A100", 250.0)):
            for model in ("Llama-2 (7B)", "Mistral (7B)", "Falcon (7B)"):
                series = sorted(
                    (getattr(p, attribute), p.mean_power_w)
                    for p in points
                    if p.system == system and p.model == model
                )
                assert len(series) >= 9, (system, model)
                short, longest = series[0][1], max(w for _, w in series)
                # Mean power rises with the sequence length up to the board's limit, never past it.
                assert longest > 1.3 * short, (system, model, attribute)
                assert longest <= limit + 5.0, (system, model, attribute)
