"""The trace-driven mode: recorded power scaled by the model, rows built from traces, controllers over
them, ``strato power replay-trace``; ``strato power publish`` of trace-driven and simulated rows to a
real gmond (:mod:`strato.monitor.publish_power`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from data_helpers import shared_data
from monitor_helpers import collector
from strato.cli import power_live
from strato.errors import ConfigError
from strato.monitor.publish_power import RowSeries, settings_timeline, simulated_series, trace_series
from strato.power.catalog import power_model
from strato.power.controllers import parse_controller
from strato.power.row import AppliedAction, RowSimulator, RowSpec, RowWorkload
from strato.power.tracedrive import (
    TraceRowSpec,
    build_row,
    load_traces,
    run_trace,
    scale_recorded_w,
)
from strato.traces.llm import load_requests

MODEL = power_model("a100-80gb", "llama2-70b")
LLAMA = shared_data() / "llm-gpu-power/plots/parameter-scale-input-test/raw_stats/llama2-70b"


def test_scaling_recorded_power_follows_the_models_law() -> None:
    recorded = np.array([40.0, 58.0, 150.0, 300.0, 350.0])
    # At the maximum clock without a cap the recording is kept (it was made there).
    assert scale_recorded_w(MODEL, recorded, 1410.0) == pytest.approx(recorded)
    locked = scale_recorded_w(MODEL, recorded, 1110.0)
    # 150 W is a decode level, 300 and 350 W only prefill reaches (below the power-bound share of TDP,
    # the next test's).
    exponents = np.array([MODEL.decode_scaling.power_exponent] + [MODEL.prefill_scaling.power_exponent] * 2)
    factor = (1110 / 1410) ** exponents
    assert locked[:2] == pytest.approx([40.0, 58.0])  # at or below idle: nothing to scale
    assert locked[2:] == pytest.approx(58.0 + (recorded[2:] - 58.0) * factor)
    # The same law as PowerModel.gpu_power_w for a decode phase whose demand is 150 W.
    decode = MODEL.gpu_power_w(np.array([2]), np.array([1.0]), np.array([1110.0]))
    demand = float(MODEL.demand_w(np.array([2]), np.array([1.0]))[0])
    assert scale_recorded_w(MODEL, np.array([demand]), 1110.0)[0] == pytest.approx(decode[0])
    capped = scale_recorded_w(MODEL, recorded, 1410.0, 300.0)
    assert capped == pytest.approx([40.0, 58.0, 150.0, 300.0, 300.0])


def write_trace(path: Path, watts: np.ndarray) -> Path:
    """``watts[k, gpu]`` at 10 Hz as nvidia-smi writes it (index column, units in the values)."""
    lines = ["timestamp, index, power.draw [W], utilization.gpu [%]"]
    for k, row in enumerate(watts):
        base = np.datetime64("2024-04-05T06:17:19.000") + np.timedelta64(100 * k, "ms")
        stamp = str(base).replace("-", "/").replace("T", " ")
        lines += [f"{stamp}, {gpu}, {w:.2f} W, 50 %" for gpu, w in enumerate(row)]
    path.write_text("\n".join(lines) + "\n")
    return path


def square_wave(tmp_path: Path) -> Path:
    """Two GPUs, 60 s: 100 W, with 10 s at 400 W every 30 s (GPU 1 a little lower)."""
    t = np.arange(600)
    high = (t % 300) < 100
    watts = np.column_stack([np.where(high, 400.0, 100.0), np.where(high, 380.0, 90.0)])
    return write_trace(tmp_path / "nvidia-smi.csv", watts)


def test_a_row_keeps_each_servers_gpus_in_step_and_is_seeded(tmp_path: Path) -> None:
    traces = load_traces(square_wave(tmp_path))
    spec = TraceRowSpec(servers=6, budget_servers=5, seed=3)
    row = build_row(traces, spec, MODEL)
    assert row.gpu_w.shape == (6, 8, 600)
    # GPU j follows the recorded GPU j mod 2, from the server's own offset.
    for server, offset in enumerate(row.server_offset_s):
        start = round(offset * 10)
        assert row.gpu_w[server, 0, 0] == traces[0].per_gpu(0)[1][start]
        assert (row.gpu_w[server, 2] == row.gpu_w[server, 0]).all()
        assert (row.gpu_w[server, 3] == row.gpu_w[server, 1]).all()
    assert len(set(row.server_offset_s)) > 1
    again = build_row(traces, spec, MODEL)
    assert (again.gpu_w == row.gpu_w).all()
    assert not (build_row(traces, TraceRowSpec(servers=6, seed=4), MODEL).gpu_w == row.gpu_w).all()
    # The rest of the server: idle level below the batch-1 decode power, busy level from it up.
    busy = row.gpu_w[:, :, :].min(axis=1) >= float(MODEL.phases.decode_w(1.0))
    assert row.rest_w[busy] == pytest.approx(MODEL.server.rest_busy_w)


def test_actions_act_after_their_delay_and_only_on_their_class(tmp_path: Path) -> None:
    traces = load_traces(square_wave(tmp_path))
    spec = TraceRowSpec(servers=4, budget_servers=4, seed=1, budget_w=4 * 5400.0, actuation_delay_s=10.0)
    free = run_trace(parse_controller("none"), traces, spec)
    locked = run_trace(parse_controller("polca:t1=0.5,t2=1.5,brake=1.9"), traces, spec)
    first = locked.actions[0]
    assert first.action == "low: lock 1275 MHz" and first.time_s == pytest.approx(first.decided_s + 10.0)
    before = round(first.time_s * 10)
    assert (locked.power_w[:before] == free.power_w[:before]).all()
    # After it, only the two low-priority servers' GPUs draw less, by the model's law.
    row = build_row(traces, spec, MODEL)
    expected = row.gpu_w[:2, :, before:].sum(axis=(0, 1)) + scale_recorded_w(
        MODEL, row.gpu_w[2:, :, before:], 1275.0
    ).sum(axis=(0, 1)) + row.rest_w[:, before:].sum(axis=0)  # fmt: skip
    assert locked.power_w[before:] == pytest.approx(expected)
    assert (locked.power_w[before:] <= free.power_w[before:] + 1e-9).all()
    assert locked.power_w[before:].sum() < free.power_w[before:].sum()
    series = trace_series(locked)
    assert series.low_mhz.min() == 1275.0 and series.high_mhz.min() == 1410.0


def test_the_brake_holds_every_gpu_at_the_brake_clock_after_its_delay(tmp_path: Path) -> None:
    traces = load_traces(square_wave(tmp_path))
    spec = TraceRowSpec(servers=4, budget_servers=4, seed=1, budget_w=4 * 4600.0, brake_delay_s=5.0)
    run = run_trace(parse_controller("capping:threshold=1.9"), traces, spec)
    pulled = next(a for a in run.actions if a.action == "power brake on")
    assert pulled.time_s == pytest.approx(pulled.decided_s + 5.0) and run.brake_events >= 1
    at = round(pulled.time_s * 10)
    row = build_row(traces, spec, MODEL)
    braked = scale_recorded_w(MODEL, row.gpu_w[:, :, at], 288.0).sum() + row.rest_w[:, at].sum()
    assert run.power_w[at] == pytest.approx(braked)
    assert trace_series(run).brake[int(pulled.time_s / 2.0)]


@pytest.mark.shared_data
def test_polca_over_the_real_llama2_70b_trace_keeps_a_90_server_row_out_of_the_brake() -> None:
    if not LLAMA.exists():
        pytest.skip(f"the llama2-70b nvidia-smi trace is not in {LLAMA}")
    traces = load_traces(LLAMA)
    spec = TraceRowSpec(servers=90, budget_servers=40)
    row = build_row(traces, spec, MODEL)
    runs = {
        name: run_trace(parse_controller(name), traces, spec, row=row)
        for name in ("none", "capping", "polca")
    }
    none, capping, polca = runs["none"], runs["capping"], runs["polca"]
    assert none.peak_share > 1.0 and none.time_above(1.0) > 30
    assert capping.brake_events > 0
    assert polca.brake_events == 0
    # The row sits near 89 % for the whole recording; POLCA's locks hardly touch its power-bound prefill
    # peaks (at 1275/1305 MHz they were already held at ~1250 MHz by TDP), so they take ~10 % off the
    # time above t2 (1164 of 1301 s), and what matters, the time over the budget, almost all.
    assert polca.time_above(0.89) < 0.95 * none.time_above(0.89)
    assert polca.time_above(1.0) < 0.1 * none.time_above(1.0)
    # At the +30 % row (52 servers) the recording never reaches 80 % of the rated budget.
    small = run_trace(parse_controller("polca"), traces, TraceRowSpec(servers=52), row=None)
    assert small.peak_share < 0.8 and not small.actions


# ---- the CLI -------------------------------------------------------------------------------------


def app() -> typer.Typer:
    made = typer.Typer()
    power_live.register(made)

    @made.callback()
    def power() -> None:
        """Stands in for ``strato power``."""

    return made


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app(), list(args))


def test_replay_trace_prints_json(tmp_path: Path) -> None:
    path = square_wave(tmp_path)
    result = invoke(
        "replay-trace", "--trace", str(tmp_path), "--servers", "5", "--budget-servers", "4", "--budget-from",
        "peak", "--controller", "polca", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["sources"] == [str(path)] and summary["servers"] == 5
    assert summary["budget_from"] == "peak of the first 4 servers with no control"
    assert summary["uncontrolled_peak_share"] > 1.0 and summary["duration_s"] == pytest.approx(60.0)
    assert set(summary["time_above_s"]) == {"80%", "89%", "100%"}


def test_replay_trace_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "nvidia-smi.csv"
    bad.write_text("timestamp, power.draw [W]\n2024/04/05 06:17:19.635, 58.67 W\n2024/04/05 06:17:19.7, x\n")
    missing_column = tmp_path / "other.csv"
    missing_column.write_text("timestamp, utilization.gpu [%]\n2024/04/05 06:17:19.635, 5 %\n")
    for args, message in (
        (["--trace", str(bad)], "nvidia-smi.csv, row 3, column power.draw [W]: 'x' is not a number"),
        (["--trace", str(missing_column)], "other.csv, row 1, column power.draw: no power column"),
        (["--trace", str(tmp_path / "nope")], "no such trace file or folder"),
        (["--trace", str(bad), "--controller", "pulca"], "unknown power controller 'pulca'"),
        (["--trace", str(bad), "--telemetry", "0.15s"], "whole number of 0.1 s samples"),
    ):
        result = invoke("replay-trace", *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert result.output.count("\n") == 1


def above_80(gmond: Any, tmp_path: Path) -> list[str]:
    """The members of a C2MS group ``budget_share > 0.8`` over what the gmond holds now."""
    from strato.monitor.config import load_config
    from strato.monitor.service import Monitor

    monitor = Monitor(load_config(None, source=gmond.xml_address, db_path=tmp_path / "m.db"))
    monitor.store.create("above80", rule="budget_share > 0.8")
    members: list[str] = monitor.poll().groups["above80"].members
    return members


def wait_for_rows(gmond: Any, rows: list[dict[str, Any]]) -> Any:
    def landed(snapshot: Any) -> bool:
        return all(
            r["name"] in snapshot.hosts
            and snapshot.hosts[r["name"]].value("budget_share") == pytest.approx(r["budget_share"])
            for r in rows
        )

    return gmond.wait_for(landed)


@pytest.mark.system
def test_publish_puts_each_trace_driven_row_in_a_real_gmond_and_groups_follow_the_share(
    tmp_path: Path,
) -> None:
    square_wave(tmp_path)
    with collector(tmp_path / "gmond") as gmond:
        result = invoke(
            "publish", "--gmond", gmond.udp_address, "--trace", str(tmp_path), "--rows", "3",
            "--servers", "5", "--budget-servers", "4", "--budget-from", "peak", "--controller", "none",
            "--speed", "20", "--interval", "250ms", "--wall-duration", "1s", "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["rows"]
        assert [r["name"] for r in rows] == ["row-1", "row-2", "row-3"]
        snapshot = wait_for_rows(gmond, rows)
        for r in rows:
            host = snapshot.hosts[r["name"]]
            assert host.ip == r["ip"] and host.metrics["row_power_w"].group == "power"
            assert host.value("row_power_w") == pytest.approx(r["row_power_w"])
            assert host.value("low_clock_mhz") == pytest.approx(1410.0)
            assert host.value("controller_level") == 0
        assert above_80(gmond, tmp_path) == sorted(r["name"] for r in rows if r["budget_share"] > 0.8)


def test_a_simulated_rows_settings_follow_its_landed_actions() -> None:
    actions = (
        AppliedAction(4.0, 0.0, "low: lock 1275 MHz", 1410.0, 1275.0, False),
        AppliedAction(7.0, 2.0, "power brake on", 1410.0, 1275.0, True),
        AppliedAction(9.0, 4.0, "power brake off", 1410.0, 1275.0, False),
    )
    ends = np.array([2.0, 4.0, 6.0, 8.0, 10.0])
    brake, low, high = settings_timeline(actions, ends, max_mhz=1410.0, brake_mhz=288.0)
    # Nothing before the first action; an action landing at a step's end counts at it; the brake
    # holds both classes at its clock.
    assert brake.tolist() == [False, False, False, True, False]
    assert low.tolist() == [1410.0, 1275.0, 1275.0, 288.0, 1275.0]
    assert high.tolist() == [1410.0, 1410.0, 1410.0, 288.0, 1410.0]
    # A row without a low-priority class publishes no low clock.
    lonely = (AppliedAction(0.0, 0.0, "all: lock 1110 MHz", 1110.0, None, False),)
    _, low, high = settings_timeline(lonely, ends[:1], max_mhz=1410.0, brake_mhz=288.0)
    series = RowSeries("static:1110", 1000.0, 2.0, np.array([900.0]), np.array([False]), low, high)
    assert series.values(0) == {
        "row_power_w": 900.0, "budget_share": 0.9, "brake": 0.0, "high_clock_mhz": 1110.0,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="do not record the row's settings"):
        settings_timeline((AppliedAction(1.0, 0.0, "power brake on"),), ends, max_mhz=1410.0, brake_mhz=288.0)


@pytest.mark.system
def test_publish_simulate_puts_engine_rows_in_a_real_gmond_and_groups_follow_the_share(
    tmp_path: Path,
) -> None:
    with collector(tmp_path / "gmond") as gmond:
        # Tick 2 shows row time 2 x 0.25 x 24 = 12 s: telemetry step 5 (10-12 s), where, with these
        # seeds, two rows are above 80 % of their budget and one is below.
        result = invoke(
            "publish", "--gmond", gmond.udp_address, "--simulate", "1m", "--rows", "3", "--servers", "6",
            "--budget-servers", "4", "--controller", "polca", "--speed", "24", "--interval", "250ms",
            "--wall-duration", "500ms", "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        rows = summary["rows"]
        assert summary["ticks"] == 3 and [r["step"] for r in rows] == [5, 5, 5]
        base = load_requests("synthetic:kind=code", duration_s=3600.0, seed=0)
        spec = RowSpec(servers=6, budget_servers=4)
        for seed, r in enumerate(rows):
            workload = RowWorkload(base, 0.9, 60.0, start_s=15 * 3600.0, seed=seed)
            run = RowSimulator(spec, workload, parse_controller("polca")).run()
            expected = simulated_series(run, max_mhz=1410.0, brake_mhz=288.0).values(5)
            assert {k: r[k] for k in expected} == pytest.approx(expected)
            assert "controller_level" not in r
        shares = [r["budget_share"] for r in rows]
        assert min(shares) < 0.8 < max(shares), f"the seeds no longer straddle 80 %: {shares}"
        snapshot = wait_for_rows(gmond, rows)
        for r in rows:
            host = snapshot.hosts[r["name"]]
            assert host.metrics["budget_share"].group == "power"
            for metric in ("row_power_w", "brake", "low_clock_mhz", "high_clock_mhz"):
                assert host.value(metric) == pytest.approx(r[metric]), metric
        assert above_80(gmond, tmp_path) == sorted(r["name"] for r in rows if r["budget_share"] > 0.8)


def test_publish_rejects_options_of_the_other_mode_in_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["--simulate", "1m", "--trace", str(tmp_path)], "--trace and --budget-from describe trace-driven"),
        (["--peak-rate", "0.5/s"], "--peak-rate and --start describe a simulated row"),
        (["--simulate", "10"], "--simulate needs a unit"),
        (["--simulate", "1m", "--peak-rate", "0.5"], "--peak-rate needs a rate with its unit"),
    ):
        result = invoke("publish", "--gmond", "127.0.0.1:9", *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert result.output.count("\n") == 1


# ---- review fixes (issue 13) ---------------------------------------------------------------------


def test_a_power_bound_reading_scales_as_the_engine_models_prefill_at_tdp() -> None:
    from strato.power.model import PREFILL

    tdp = MODEL.clocks.tdp_w
    # A reading at TDP is a prefill held there by the power limit (demand 1.3 x TDP at ~1250 MHz): a
    # lock above that effective clock takes nothing from it, as PowerModel.gpu_power_w says.
    assert scale_recorded_w(MODEL, np.array([tdp]), 1275.0)[0] == pytest.approx(tdp)
    assert scale_recorded_w(MODEL, np.array([tdp]), 1305.0)[0] == pytest.approx(tdp)
    bound = np.array([PREFILL]), np.array([8192.0])
    for mhz in (1275.0, 1110.0, 900.0):
        engine = float(MODEL.gpu_power_w(*bound, np.array([mhz]))[0])
        assert scale_recorded_w(MODEL, np.array([tdp]), mhz)[0] == pytest.approx(engine), mhz
    # Readings in the power-bound band keep their share of the engine's (TDP - idle) at every clock,
    # so the recording is kept unlocked and a lock never raises power.
    band = np.array([0.95 * tdp, tdp, 1.15 * tdp])
    assert scale_recorded_w(MODEL, band, 1410.0) == pytest.approx(band)
    engine = float(MODEL.gpu_power_w(*bound, np.array([1110.0]))[0])
    share = (engine - MODEL.phases.idle_w) / (tdp - MODEL.phases.idle_w)
    assert scale_recorded_w(MODEL, band, 1110.0) == pytest.approx(
        MODEL.phases.idle_w + (band - MODEL.phases.idle_w) * share
    )
    # A cap still holds: a reading at TDP is the prefill the engine holds at the cap.
    capped = scale_recorded_w(MODEL, band, 1410.0, 300.0)
    assert capped[1] == pytest.approx(300.0) and (capped <= 300.0 + 1e-9).all()


def test_trace_runs_share_the_thresholds_and_record_settings_with_each_action(tmp_path: Path) -> None:
    from strato.power import experiment, tracedrive

    assert tracedrive.THRESHOLDS is experiment.THRESHOLDS
    traces = load_traces(square_wave(tmp_path))
    spec = TraceRowSpec(servers=4, budget_servers=4, seed=1, budget_w=4 * 5400.0, actuation_delay_s=10.0)
    run = run_trace(parse_controller("polca:t1=0.5,t2=1.5,brake=1.9"), traces, spec)
    first = run.actions[0]
    assert (first.action, first.high_lock_mhz, first.low_lock_mhz, first.brake) == (
        "low: lock 1275 MHz", 1410.0, 1275.0, False,
    )  # fmt: skip
    # Published settings come from that one timeline: the lock shows from the step its action landed in.
    series = trace_series(run)
    ends = (np.arange(series.steps) + 1) * run.telemetry_s
    landed = int(np.argmax(ends >= first.time_s))
    assert (series.low_mhz[:landed] == 1410.0).all() and (series.low_mhz[landed:] == 1275.0).all()
    assert (series.high_mhz == 1410.0).all() and not series.brake.any()
    assert series.level is not None and series.level.max() == 1
    braked = run_trace(
        parse_controller("capping:threshold=1.9"),
        traces,
        TraceRowSpec(servers=4, budget_servers=4, seed=1, budget_w=4 * 4600.0, brake_delay_s=5.0),
    )
    on = next(a for a in braked.actions if a.action == "power brake on")
    assert on.brake is True and on.low_lock_mhz == 1410.0
    published = trace_series(braked)
    step = int(np.argmax((np.arange(published.steps) + 1) * braked.telemetry_s >= on.time_s))
    assert published.brake[step] and published.low_mhz[step] == 288.0 == published.high_mhz[step]


def test_publish_durations_need_units_and_say_they_are_wall_time(tmp_path: Path) -> None:
    for args, message in (
        (["--interval", "0.25"], "--interval needs a unit"),
        (["--wall-duration", "1"], "--wall-duration needs a unit"),
    ):
        result = invoke("publish", "--gmond", "127.0.0.1:9", "--trace", str(tmp_path), *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    result = invoke("publish", "--help")
    assert "--wall-duration" in result.output and "--duration" not in result.output.replace(
        "--wall-duration", ""
    )
