"""``strato power``: simulate and sweep on short rows at the day's peak, and one line for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from strato.cli.main import app

pytestmark = pytest.mark.slow

SHORT = ["--duration", "5m", "--start", "14:00", "--peak-rate", "0.9/s"]


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["power", *args])
    return result.exit_code, result.output


def test_simulate_json_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "row.png"
    code, output = invoke(
        "simulate", "--servers", "8", "--budget-servers", "6", "--controller", "polca", *SHORT,
        "--plot", str(plot), "--json",
    )  # fmt: skip
    assert code == 0, output
    data = json.loads(output)
    none, polca = data["rows"]
    assert none["controller"] == "none" and none["reference"] and polca["controller"] == "polca"
    assert none["classes"]["high"]["e2e_p50_pct"] == 0.0 and none["above_100_s"] > 0
    assert polca["actions"] > 0 and polca["above_89_s"] < none["above_89_s"]
    assert data["workload"]["start_s"] == 14 * 3600 and data["workload"]["duration_s"] == 300
    assert data["budget_w"] == 6 * 6500.0  # auto: the budget servers' rated power
    assert plot.stat().st_size > 10_000


def test_simulate_table_and_explicit_budget() -> None:
    code, output = invoke(
        "simulate", "--servers", "4", "--budget-servers", "4", "--budget", "30kW", "--peak-rate", "54/min",
        "--duration", "5m", "--start", "14:00", "--controller", "capping", "--workers", "1",
    )  # fmt: skip
    assert code == 0, output
    assert "30.0" in output and "capping" in output and "none (reference)" in output
    assert "latency impact against none" in output


def test_sweep_json() -> None:
    code, output = invoke(
        "sweep", "--added", "0:3:3", "--budget-servers", "6", "--controller", "polca", "--controller", "none",
        "--duration", "3m", "--start", "14:00", "--peak-rate", "0.9rps", "--workers", "2", "--json",
    )  # fmt: skip
    assert code == 0, output
    data = json.loads(output)
    assert data["added"] == [0, 3]
    assert sorted((row["controller"], row["added"]) for row in data["rows"]) == [
        ("none", 0), ("none", 3), ("polca", 0), ("polca", 3),
    ]  # fmt: skip
    assert data["limits"]["none"]["meets_targets_up_to"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--design", "baseline-v100"], "unknown design 'baseline-v100'"),
        (["simulate", "--model", "gpt-9"], "unknown model 'gpt-9'"),
        (["simulate", "--model", "llama3-70b"], "no power model for LLM 'llama3-70b'"),
        (["simulate", "--controller", "polca:low1=2000"], "polca low1 clock 2000 MHz is outside"),
        (["simulate", "--controller", "polca:t1=0.9,t2=0.8"], "thresholds must rise"),
        (["simulate", "--controller", "warp"], "unknown power controller 'warp'"),
        (["simulate", "--budget", "10kW"], "not above the row's idle power"),
        (["simulate", "--budget", "260"], "--budget needs a power with its unit"),
        (["simulate", "--budget", "1.2mW"], "ambiguous"),
        (["simulate", "--duration", "10"], "--duration needs a unit"),
        (["simulate", "--peak-rate", "0.9"], "--peak-rate needs a rate with its unit"),
        (["simulate", "--telemetry", "2"], "--telemetry needs a unit"),
        (["simulate", "--start", "25:00"], "--start must be a time of day"),
        (["simulate", "--start-day", "someday"], "--start-day must be one of"),
        (["sweep", "--added", "0-50"], "--added must be START:STOP:STEP"),
        (["sweep", "--added", "-5:10:5"], "cannot be negative"),
        (["sweep", "--added", "0:10:0"], "step must be a positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    command, *rest = args
    code, output = invoke(command, "--servers" if command == "simulate" else "--budget-servers", "6", *rest)
    assert code == 2, output
    assert len(output.strip().splitlines()) == 1, output
    assert output.startswith("error: ") and message in output, output


def test_characterize_json_without_the_row() -> None:
    code, output = invoke("characterize", "--no-row", "--no-replay", "--json")
    assert code == 0, output
    data = json.loads(output)
    assert data["row"] is None  # --no-row
    assert [point["mhz"] for point in data["frequency"]] == [1410.0, 1305.0, 1275.0, 1200.0, 1110.0]
    figures = [row["figure"] if isinstance(row, dict) else row[0] for row in data["rows"]]
    assert "lock 1110 MHz: power cut / slowdown" in figures


def test_characterize_refuses_a_unitless_duration() -> None:
    code, output = invoke("characterize", "--duration", "20")
    assert code == 2 and "--duration needs a unit" in output
