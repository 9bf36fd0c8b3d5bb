"""``strato faas bench``: one short real run of both backends and the cold starts, then its report."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

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
    _Bench,
    bench_server,
    plot_report,
    run_bench,
)


@pytest.fixture(scope="module")
def report() -> BenchReport:
    lines: list[str] = []
    options = BenchOptions.quick(duration_s=1.0, warmup_s=0.3, connections=4, cold_starts=5)
    result = run_bench(options, progress=lines.append)
    # One line per phase: 3 per backend (start + warm-up, throughput, latency) and one per spawn mode.
    assert len(lines) == 2 * 3 + 3
    return result


@pytest.mark.system
@pytest.mark.slow
def test_both_backends_served_the_same_load_without_errors(report: BenchReport) -> None:
    assert set(report.backends) == set(BACKENDS)
    for name, backend in report.backends.items():
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
        assert backend.latency.offered_rps == pytest.approx(report.rate_rps)
        assert backend.search is None  # off in quick runs
    lowest = min(b.throughput.achieved_rps for b in report.backends.values())
    assert report.rate_rps == pytest.approx(lowest / 2)


@pytest.mark.system
@pytest.mark.slow
def test_ratios_are_the_ratios_of_the_reported_numbers(report: BenchReport) -> None:
    lean, faasd = report.backends["lean"], report.backends["faasd"]
    assert lean.latency is not None and faasd.latency is not None
    ratios = report.ratios
    assert ratios["median_latency"].value == pytest.approx(lean.latency.p50_s / faasd.latency.p50_s)
    assert ratios["p99_latency"].value == pytest.approx(lean.latency.p99_s / faasd.latency.p99_s)
    assert ratios["throughput"].value == pytest.approx(
        lean.throughput.achieved_rps / faasd.throughput.achieved_rps
    )
    for ratio in ratios.values():
        assert ratio.value is not None
        expected = ratio.value <= ratio.target if ratio.better == "lower" else ratio.value >= ratio.target
        assert ratio.met == expected
    assert (ratios["median_latency"].target, ratios["p99_latency"].target) == (0.63, 0.37)
    assert ratios["throughput"].target == 5.0


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
    assert data["options"]["connections"] == 4 and data["options"]["duration_s"] == 1.0
    machine = data["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"].count(".") == 2
    assert isinstance(machine["uvloop"], bool)
    for name in BACKENDS:
        backend = data["backends"][name]
        assert backend["throughput"]["achieved_rps"] > 0
        assert backend["latency"]["p99_s"] >= backend["latency"]["p50_s"] > 0
        assert "latencies_s" not in backend["latency"]
    assert data["ratios"]["median_latency"]["value"] == pytest.approx(
        data["backends"]["lean"]["latency"]["p50_s"] / data["backends"]["faasd"]["latency"]["p50_s"]
    )
    assert {entry["label"] for entry in data["cold_starts"]} == {"fresh", "fork", "fork (no sandbox)"}
    assert all(len(entry["server_start_s"]) == 5 for entry in data["cold_starts"])


@pytest.mark.system
@pytest.mark.slow
def test_table_and_plot(report: BenchReport, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    print_report(report)
    out = capsys.readouterr().out
    assert "max throughput" in out and "latency p99" in out and "Junctiond target" in out
    assert "fork (no sandbox)" in out
    path = plot_report(report, tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split())


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
