"""``strato faas bench``: short real runs of both backends (one, and two interleaved), the cold starts,
the plain echo server, and the report."""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import math
import os
import statistics
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer
from typer.testing import CliRunner

from strato.cli.faas_bench import build_options, print_report, register
from strato.errors import ConfigError
from strato.faas.live.bench import (
    BACKENDS,
    ECHO_HANDLER,
    FUNCTION,
    BenchOptions,
    BenchReport,
    LoadPhase,
    PhaseCpu,
    WrkPhase,
    _Bench,
    _CpuSnapshot,
    _phase_cpu,
    _run_warnings,
    bench_server,
    plot_report,
    run_bench,
)
from strato.faas.live.loadgen import find_wrk
from strato.faas.live.plain_echo import MAX_BODY, plain_echo_server

WRK = find_wrk() is not None
needs_wrk = pytest.mark.skipif(not WRK, reason="wrk is not installed (scripts/bench-deps.sh installs it)")


@pytest.fixture(scope="module")
def report() -> BenchReport:
    """One run with the default generator choice (wrk beside the Python one when wrk is installed)."""
    lines: list[str] = []
    options = BenchOptions.quick(duration_s=1.0, warmup_s=0.3, connections=4, cold_starts=5)
    result = run_bench(options, progress=lines.append)
    # One line per phase: per backend start + warm-up, throughput, [wrk], latency; two floor phases; one
    # per spawn mode.
    assert len(lines) == 2 * (3 + WRK) + 2 + 3
    return result


@pytest.fixture(scope="module")
def repeated() -> tuple[BenchReport, list[str]]:
    """Two interleaved runs on the Python generator alone, without cold starts."""
    lines: list[str] = []
    options = BenchOptions.quick(
        duration_s=1.0, warmup_s=0.3, connections=4, cold_starts=0, repeat=2, load_generator="python"
    )
    return run_bench(options, progress=lines.append), lines


@pytest.mark.system
@pytest.mark.slow
def test_both_backends_served_the_same_load_without_errors(report: BenchReport) -> None:
    assert len(report.runs) == 1
    run = report.runs[0]
    assert run.order == BACKENDS
    assert set(run.backends) == set(BACKENDS)
    for name, backend in run.backends.items():
        assert backend.warmup.requests >= 300, name
        assert 1 <= backend.warmup.instances <= 4 * 2, name
        for phase in (backend.throughput, backend.latency):
            assert phase is not None
            assert phase.completed > 0, name
            assert phase.errors == 0, (name, phase.status_counts)
            assert set(phase.status_counts) == {200}, name
            assert 0 < phase.p50_s <= phase.p90_s <= phase.p99_s <= phase.max_s, name
            assert len(phase.latencies_s) == phase.completed
        assert backend.throughput.mode == "closed"
        assert backend.latency is not None and backend.latency.mode == "open"
        # Equal load: the very same offered rate, the rule's rate when no --rate was given.
        assert backend.latency.offered_rps == pytest.approx(run.rate_rps)
        assert backend.search is None  # off in quick runs
    # Half the lower maximum, measured by the generator the throughput is judged on.
    lowest = min(b.max_throughput(report.load_generator).achieved_rps for b in run.backends.values())
    assert run.rate_rps == pytest.approx(lowest / 2)


@pytest.mark.system
@pytest.mark.slow
def test_ratios_are_the_ratios_of_the_reported_numbers(report: BenchReport) -> None:
    run = report.runs[0]
    lean, faasd = run.backends["lean"], run.backends["faasd"]
    assert lean.latency is not None and faasd.latency is not None
    ratios = run.ratios
    assert ratios["median_latency"].value == pytest.approx(lean.latency.p50_s / faasd.latency.p50_s)
    assert ratios["p99_latency"].value == pytest.approx(lean.latency.p99_s / faasd.latency.p99_s)
    source = report.load_generator
    assert ratios["throughput"].source == run.throughput_source == source
    assert ratios["throughput"].value == pytest.approx(
        lean.max_throughput(source).achieved_rps / faasd.max_throughput(source).achieved_rps
    )
    assert run.floor is not None
    assert ratios["floor_p50"].value == pytest.approx(run.floor.lean.p50_s / run.floor.plain.p50_s)
    for ratio in ratios.values():
        assert ratio.value is not None
        expected = ratio.value <= ratio.target if ratio.better == "lower" else ratio.value >= ratio.target
        assert ratio.met == expected
    assert (ratios["median_latency"].target, ratios["p99_latency"].target) == (0.63, 0.37)
    assert ratios["throughput"].target == 5.0 and ratios["floor_p50"].target == 3.0
    # One run: the summary's spread is that run's value, judged by the same rules.
    for key, ratio in ratios.items():
        item = report.summary.get(key)
        assert item is not None and item.values == (ratio.value,)
        assert item.minimum == item.median == item.maximum == ratio.value
        assert item.met == ratio.met
    assert report.summary.met == all(ratio.met for ratio in ratios.values())


@pytest.mark.system
@pytest.mark.slow
def test_cold_starts_per_spawn_mode(report: BenchReport) -> None:
    modes = {(cold.spawn, cold.sandbox): cold for cold in report.cold_starts}
    assert set(modes) == {("fresh", True), ("fork", True), ("fork", False)}
    for cold in report.cold_starts:
        assert cold.invocations == 5 and cold.errors == 0, cold.label
        assert cold.cold_starts == 5, cold.label
        assert len(cold.server_start_s) == 5 and len(cold.client_latency_s) == 5, cold.label
        assert all(sample > 0 for sample in cold.client_latency_s)
        assert 0 <= cold.start_p50_s <= cold.start_p99_s
        assert 0 < cold.client_p50_s <= cold.client_p99_s
    # Forking a pre-initialised template skips the interpreter start and the imports: a large effect.
    assert modes[("fork", True)].start_p50_s < modes[("fresh", True)].start_p50_s
    assert modes[("fork", True)].target_s == 0.010 and modes[("fresh", True)].target_s is None


@pytest.mark.system
@pytest.mark.slow
def test_json_report_is_complete(report: BenchReport) -> None:
    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert data["format"] == "strato-faas-bench/2"
    assert data["options"]["connections"] == 4 and data["options"]["duration_s"] == 1.0
    assert data["options"]["repeat"] == 1 and data["options"]["load_generator"] == "auto"
    machine = data["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"].count(".") == 2
    assert isinstance(machine["uvloop"], bool)
    assert data["load_generator"]["judged_on"] == ("wrk" if WRK else "python")
    (run,) = data["runs"]
    for name in BACKENDS:
        backend = run["backends"][name]
        assert backend["throughput"]["achieved_rps"] > 0
        assert backend["throughput"]["generator_cpu_per_request_s"] > 0
        assert backend["throughput"]["cpu"]["server_s"] > 0
        assert backend["latency"]["p99_s"] >= backend["latency"]["p50_s"] > 0
        assert "latencies_s" not in backend["latency"]
        assert (backend["wrk"] is not None) == WRK
    assert run["ratios"]["median_latency"]["value"] == pytest.approx(
        run["backends"]["lean"]["latency"]["p50_s"] / run["backends"]["faasd"]["latency"]["p50_s"]
    )
    floor = run["floor"]
    assert floor["ratio"]["plain_echo"] == pytest.approx(floor["plain_echo"]["p50_s"])
    assert set(data["summary"]["ratios"]) == {"median_latency", "p99_latency", "throughput", "floor_p50"}
    assert {entry["label"] for entry in data["cold_starts"]} == {"fresh", "fork", "fork (no sandbox)"}
    assert all(len(entry["server_start_s"]) == 5 for entry in data["cold_starts"])


@pytest.mark.system
@pytest.mark.slow
def test_table_and_plot(report: BenchReport, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    print_report(report)
    out = capsys.readouterr().out
    assert "max throughput" in out and "latency p99" in out and "Junctiond target" in out
    assert "fork (no sandbox)" in out
    assert "low-load floor" in out and "plain echo p50" in out and "generator CPU / request" in out
    assert ("max throughput, wrk -t1 -c4 -d1s" in out) == WRK
    if not WRK:
        assert "wrk is not installed" in out  # and says how to get it
    path = plot_report(report, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.system
@pytest.mark.slow
def test_repeated_runs_are_interleaved_and_summarised(
    repeated: tuple[BenchReport, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    report, lines = repeated
    assert [run.index for run in report.runs] == [1, 2]
    # The second run loads faasd first, so that neither backend always goes first.
    assert [run.order for run in report.runs] == [("lean", "faasd"), ("faasd", "lean")]
    assert next(line for line in lines if "run 2/2: " in line).endswith(
        "faasd: start the server, deploy echo, warm up"
    )
    assert len(lines) == 2 * (2 * 3 + 2) and not report.cold_starts
    assert report.load_generator == "python"
    assert all(run.backends[name].wrk is None for run in report.runs for name in BACKENDS)
    keys = {"median_latency", "p99_latency", "throughput", "floor_p50"}
    assert {item.key for item in report.summary.spreads} == keys
    for item in report.summary.spreads:
        values = [run.ratios[item.key].value for run in report.runs]
        assert list(item.values) == values and all(value is not None for value in values)
        known = [value for value in values if value is not None]
        low, middle, high = item.minimum, item.median, item.maximum
        assert low is not None and middle is not None and high is not None
        assert low == min(known) and high == max(known)
        assert middle == pytest.approx(statistics.median(known))
        assert low <= middle <= high
        if item.key == "throughput":
            assert item.met == (middle >= 5.0 and low >= 4.0)
        else:
            assert item.met == all(value <= item.target for value in known)
    assert report.summary.met == all(item.met for item in report.summary.spreads)

    data = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert [run["order"] for run in data["runs"]] == [["lean", "faasd"], ["faasd", "lean"]]
    summary = data["summary"]["ratios"]["throughput"]
    assert summary["values"] == [run["ratios"]["throughput"]["value"] for run in data["runs"]]
    assert summary["median"] == pytest.approx(statistics.median(summary["values"]))

    print_report(report)
    out = capsys.readouterr().out
    assert "2 runs, interleaved" in out and "median, every run" not in out
    assert "min" in out and "median" in out and "max" in out and "every run <= 0.37" in out
    assert "min-max over 2 runs" in out


@pytest.mark.system
@pytest.mark.slow
def test_every_load_phase_reports_the_generators_cpu(
    report: BenchReport, repeated: tuple[BenchReport, list[str]]
) -> None:
    for run in [*report.runs, *repeated[0].runs]:
        phases = run.phases()
        # Per backend throughput and latency (and wrk), then the floor's two.
        assert len(phases) == 2 * (2 + (run.backends["lean"].wrk is not None)) + 2
        for server, name, phase in phases:
            where = (run.index, server, name, phase.generator)
            assert phase.generator_cpu_per_request_s is not None and phase.generator_cpu_per_request_s > 0
            assert phase.generator_core_share is not None and phase.generator_core_share > 0, where
            cpu = phase.cpu
            assert cpu is not None and cpu.wall_s > 0 and cpu.cpus >= 1, where
            assert cpu.generator_s > 0 and cpu.machine_busy_s > 0 and cpu.other_s >= 0, where
            if server != "plain echo" or name != "floor":
                assert cpu.server_s > 0, where  # the gateway answered every request
            if isinstance(phase, LoadPhase):
                # The window's CPU is part of the process's whole, which also paid for its start-up.
                assert phase.generator_window_cpu_s is not None and phase.generator_process_cpu_s is not None
                assert 0 < phase.generator_window_cpu_s < phase.generator_process_cpu_s, where
                assert cpu.generator_s == phase.generator_process_cpu_s


@needs_wrk
@pytest.mark.system
@pytest.mark.slow
def test_wrk_runs_beside_the_python_generator_when_installed(report: BenchReport) -> None:
    run = report.runs[0]
    assert report.load_generator == "wrk" and run.throughput_source == "wrk"
    assert report.machine["wrk"]["path"] and report.machine["wrk"]["version"].startswith("wrk")
    for name, backend in run.backends.items():
        assert backend.wrk is not None, name
        result = backend.wrk.result
        assert result.connections == 4 and result.threads == 1, name
        assert result.requests > 0 and result.errors == 0, name
        assert 0 < result.p50_s <= result.p99_s, name
        assert result.cpu_s > 0, name
    assert run.floor is not None and run.floor.generator == "wrk"
    assert isinstance(run.floor.lean, WrkPhase) and run.floor.lean.result.connections == 1
    assert not any("wrk is not installed" in warning for warning in report.warnings)


@pytest.mark.system
@pytest.mark.slow
def test_warnings_name_a_busy_generator_and_other_work(report: BenchReport) -> None:
    quiet = copy.deepcopy(report.runs[0])
    for _, _, phase in quiet.phases():
        phase.cpu = None
        if isinstance(phase, LoadPhase):
            phase.generator_core_share = 0.1
    assert not any("other work" in w or "of a core in" in w for w in _run_warnings(quiet))
    busy = copy.deepcopy(quiet)
    lean = busy.backends["lean"]
    lean.throughput.generator_core_share = 0.95
    lean.throughput.cpu = PhaseCpu(
        wall_s=2.0, cpus=2, machine_busy_s=3.0, server_s=1.0, generator_s=0.5, bench_s=0.1, steal_s=0.0
    )
    warnings = " ".join(_run_warnings(busy))
    assert "lean throughput (Python generator) 95%" in warnings and "bottleneck" in warnings
    # (3.0 - 1.0 - 0.5 - 0.1) CPU seconds over 2 s, in the one phase named.
    assert "other work took 0.70 cores" in warnings and "in 1 of " in warnings
    assert "lean throughput (Python generator): expect noisy numbers" in warnings


def test_phase_cpu_splits_the_machine_between_server_generator_bench_and_the_rest() -> None:
    me = os.getpid()
    # A server (pid 10) with an instance (11) under this process, and a stranger (20) under init.
    before = _CpuSnapshot(
        0.0, busy=1000, steal=5, cpus=2, processes={me: (1, 100), 10: (me, 50), 11: (10, 20)}
    )
    after = _CpuSnapshot(
        2.0,
        busy=1300,
        steal=5,
        cpus=2,
        processes={me: (1, 150), 10: (me, 110), 11: (10, 60), 12: (11, 10), 20: (1, 999)},
    )
    cpu = _phase_cpu(before, after, server_pid=10, generator_s=0.3)
    assert cpu is not None
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    assert cpu.server_s == pytest.approx((60 + 40 + 10) * tick)  # gateway, instance, its new child
    assert cpu.bench_s == pytest.approx(max(0.0, (50 + 110) * tick - cpu.server_s - 0.3))
    assert cpu.machine_busy_s == pytest.approx(300 * tick) and cpu.steal_s == 0
    assert cpu.other_s == pytest.approx(max(0.0, 300 * tick - cpu.server_s - 0.3 - cpu.bench_s))
    assert cpu.other_cores == pytest.approx(cpu.other_s / 2.0)
    assert _phase_cpu(None, after, 10, 0.3) is None


@pytest.mark.system
def test_plain_echo_server_echoes_bodies_on_one_connection() -> None:
    with plain_echo_server() as (url, pid):
        assert pid > 0
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1"
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            for body in (b"x" * 64, b"\x00\xff binary", b""):
                connection.request("POST", "/function/echo", body=body)
                response = connection.getresponse()
                assert (response.status, response.read()) == (200, body)
            connection.request("POST", "/", body=b"y" * (MAX_BODY + 1))
            response = connection.getresponse()
            assert response.status == 413 and response.getheader("Connection") == "close"
        finally:
            connection.close()
        raw = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            raw.connect()
            assert raw.sock is not None
            raw.sock.sendall(b"NOT HTTP\r\n\r\n")
            assert raw.sock.recv(100).startswith(b"HTTP/1.1 400 ")
        finally:
            raw.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"duration_s": -1.0}, "duration"),
        ({"duration_s": 0.0}, "duration"),
        ({"duration_s": math.inf}, "duration"),
        ({"connections": 0}, "connections"),
        ({"rate_rps": -5.0}, "rate"),
        ({"rate_rps": math.nan}, "rate"),
        ({"cold_starts": -1}, "cold starts"),
        ({"warmup_s": -0.5}, "warm-up"),
        ({"start_timeout_s": 0.0}, "start timeout"),
        ({"repeat": 0}, "repeat"),
        ({"repeat": 101}, "repeat"),
        ({"load_generator": "ab"}, "load generator must be one of auto, wrk, python"),
        ({"floor_s": -1.0}, "floor"),
        ({"floor_s": math.nan}, "floor"),
    ],
)
def test_bad_options_raise_config_error(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BenchOptions(**overrides)  # type: ignore[arg-type]


def test_quick_defaults_give_way_to_explicit_options() -> None:
    quick = build_options(quick=True)
    assert quick.duration_s == 1.0 and not quick.search and quick.cold_starts == 10
    assert build_options(quick=True, duration=3.0, search=True).duration_s == 3.0
    assert build_options(quick=False) == BenchOptions()
    with pytest.raises(ConfigError, match="connections"):
        build_options(quick=True, connections=0)


def test_cli_rejects_bad_options_before_starting_anything(tmp_path: Path) -> None:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Group, so that bench is a subcommand as under `strato faas`."""

    register(app)
    runner = CliRunner()
    for args, message in (
        (["bench", "--duration", "-3"], "duration"),
        (["bench", "--connections", "0"], "connections"),
        (["bench", "--quick", "--plot", str(tmp_path / "missing" / "x.png")], "does not exist"),
        (["bench", "--repeat", "0"], "repeat must be between 1 and 100 runs, got 0"),
        (["bench", "--load-generator", "ab"], "load generator must be one of auto, wrk, python"),
        (["bench", "--floor-duration", "-1"], "floor duration"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split())
        assert len(result.output.strip().splitlines()) == 1, result.output
    # No wrk on PATH: asking for it is an error before anything starts, saying how to install it.
    result = runner.invoke(app, ["bench", "--load-generator", "wrk"], env={"PATH": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "wrk is not on PATH" in result.output and "apt-get install wrk" in result.output


def test_wrk_asked_for_but_missing_stops_before_any_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    lines: list[str] = []
    with pytest.raises(ConfigError, match="wrk is not on PATH"):
        run_bench(BenchOptions.quick(load_generator="wrk"), progress=lines.append)
    assert lines == []


@pytest.mark.system
def test_the_warmup_waits_for_a_first_start_longer_than_a_burst(tmp_path: Path) -> None:
    # An instance that takes a second to load its handler stands for a cold start on a busy machine: the
    # warm-up's first 0.3 s burst used to end before anything answered, and the bench gave up.
    slow_handler = "import time\n\ntime.sleep(1.0)\n\n\n" + ECHO_HANDLER
    with bench_server(
        tmp_path, backend="faasd", spawn="fork", policy="never-unload", sandbox=False, timeout_s=30.0
    ) as server:
        with contextlib.closing(server.client()) as client:
            client.deploy(
                FUNCTION,
                files={"handler.py": slow_handler},
                memory="128Mi",
                timeout="30s",
                concurrency=1,
                maxConcurrency=256,
            )
        warmup = _Bench(BenchOptions.quick(connections=2), None).warm_up(server)
    assert warmup.requests >= 300 and warmup.instances >= 1
