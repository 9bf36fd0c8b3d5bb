"""The strato command line, run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def strato(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strato", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_simulate_json_on_synthetic_workload_has_the_promised_fields():
    done = strato(
        "faas",
        "simulate",
        "--trace",
        "synthetic:apps=150,minutes=360,seed=2",
        "--policy",
        "fixed:10m",
        "--policy",
        "hybrid",
        "--policy",
        "never-unload",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["policy"] for r in rows] == ["fixed:10m", "hybrid:4h", "never-unload"]
    for row in rows:
        for key in (
            "invocations",
            "cold_starts",
            "cold_start_pct_p75_app",
            "wasted_memory_gb_s",
            "wasted_memory_normalized",
        ):
            assert key in row
    assert rows[0]["wasted_memory_normalized"] == pytest.approx(100.0)
    assert rows[2]["cold_starts"] <= rows[1]["cold_starts"] <= rows[0]["cold_starts"]


def test_simulate_with_capacity_and_plot(tmp_path):
    plot = tmp_path / "tradeoff.png"
    done = strato(
        "faas",
        "simulate",
        "--trace",
        "synthetic:apps=80,minutes=240",
        "--policy",
        "greedy-dual",
        "--policy",
        "fixed:10m",
        "--memory-capacity",
        "2GiB",
        "--plot",
        str(plot),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows[0]["evictions"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["faas", "simulate", "--trace", "synthetic:apps=20", "--policy", "fixed:-3m"], "duration"),
        (["faas", "simulate", "--trace", "synthetic:apps=20", "--policy", "lru"], "unknown policy"),
        (["faas", "simulate", "--trace", "synthetic:apps=20", "--memory-capacity", "12 parsecs"], "unit"),
        (["faas", "simulate", "--trace", "/nonexistent/trace"], "/nonexistent/trace"),
        (["traces", "describe", "synthetic:colour=blue"], "colour"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, message):
    done = strato(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_malformed_trace_error_names_file_row_and_column(tmp_path):
    trace = tmp_path / "invocations.csv"
    trace.write_text("HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f,http,1,-4\n")
    (tmp_path / "durations.csv").write_text(
        "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,"
        "percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,"
        "percentile_Average_99,percentile_Average_100\no,a,f,10,1,10,10,10,10,10,10,10,10,10\n"
    )
    (tmp_path / "memory.csv").write_text(
        "HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1,AverageAllocatedMb_pct5,"
        "AverageAllocatedMb_pct25,AverageAllocatedMb_pct50,AverageAllocatedMb_pct75,"
        "AverageAllocatedMb_pct95,AverageAllocatedMb_pct99,AverageAllocatedMb_pct100\n"
        "o,a,1,100,100,100,100,100,100,100,100,100\n"
    )
    done = strato("faas", "simulate", "--trace", str(trace))
    assert done.returncode == 2
    assert "invocations.csv" in done.stderr and "row 2" in done.stderr and "column 2" in done.stderr


def test_synth_then_describe_round_trip(tmp_path):
    out = tmp_path / "trace"
    done = strato("traces", "synth", str(out), "--apps", "300", "--minutes", "720", "--seed", "4")
    assert done.returncode == 0, done.stderr
    assert (out / "invocations.csv").exists()
    described = strato("traces", "describe", str(out), "--json")
    assert described.returncode == 0, described.stderr
    stats = json.loads(described.stdout)
    assert stats["n_apps"] == 300


def test_demo_writes_an_html_report_with_figures(tmp_path):
    done = strato("demo", "--out", str(tmp_path / "report"), "--apps", "200")
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "report" / "index.html").read_text()
    assert "keep-alive" in html.lower() and "<img" in html
    assert (tmp_path / "report" / "keepalive-tradeoff.png").stat().st_size > 1000
    assert "VM oversubscription (ProtoHAIL)" in html
    assert (tmp_path / "report" / "vm-frontier.png").stat().st_size > 1000
    # The Faa$T section ran against a real S3 server the demo started: both modes measured.
    assert "Faa$T: a per-application cache over a real object store" in html and "Faa$T vs no cache" in html
    if shutil.which("gmond") or os.path.exists("/usr/sbin/gmond"):
        # Groups defined by role rules over a real gmond followed the published Splitwise machines.
        assert "Dynamic server groups on Ganglia" in html
        assert (tmp_path / "report" / "monitor-groups.png").stat().st_size > 1000
