"""``strato faas bench``: the lean and faasd backends side by side, and cold starts per spawn mode."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console, print_table
from strato.errors import ConfigError

if TYPE_CHECKING:
    from strato.faas.live.bench import BenchOptions, BenchReport, Ratio


def _ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e3:,.2f} ms"


def _rps(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.0f} rps"


def _yes_no(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def _ratio_cells(ratio: Ratio, unit: str = "") -> dict[str, str]:
    comparison = "<=" if ratio.better == "lower" else ">="
    return {
        "ratio": "-" if ratio.value is None else f"{ratio.value:.2f}{unit}",
        "target": f"{comparison} {ratio.target:g}{unit}",
        "met": _yes_no(ratio.met),
    }


def print_report(report: BenchReport) -> None:
    """The report as two tables (backends side by side, then cold starts) and its warnings."""
    options = report.options
    lean, faasd = report.backends["lean"], report.backends["faasd"]
    rows: list[dict[str, Any]] = [
        {
            "metric": f"max throughput (closed loop, {options.connections} conn., {options.duration_s:g} s)",
            "lean": _rps(lean.throughput.achieved_rps),
            "faasd": _rps(faasd.throughput.achieved_rps),
            **_ratio_cells(report.ratios["throughput"], "x"),
        },
        {
            "metric": "  errors",
            "lean": f"{lean.throughput.errors:,}",
            "faasd": f"{faasd.throughput.errors:,}",
        },
    ]
    if lean.search is not None and faasd.search is not None:
        rows.append(
            {
                "metric": "sustainable rate (open loop, p99 < 100 ms)",
                "lean": _rps(lean.search.sustainable_rps),
                "faasd": _rps(faasd.search.sustainable_rps),
            }
        )
    assert lean.latency is not None and faasd.latency is not None
    rows += [
        {
            "metric": f"latency p50 at {report.rate_rps:,.0f} rps (open loop, Poisson)",
            "lean": _ms(lean.latency.p50_s),
            "faasd": _ms(faasd.latency.p50_s),
            **_ratio_cells(report.ratios["median_latency"]),
        },
        {
            "metric": "  latency p90",
            "lean": _ms(lean.latency.p90_s),
            "faasd": _ms(faasd.latency.p90_s),
        },
        {
            "metric": "  latency p99",
            "lean": _ms(lean.latency.p99_s),
            "faasd": _ms(faasd.latency.p99_s),
            **_ratio_cells(report.ratios["p99_latency"]),
        },
        {
            "metric": "  achieved rate",
            "lean": _rps(lean.latency.achieved_rps),
            "faasd": _rps(faasd.latency.achieved_rps),
        },
        {
            "metric": "  errors",
            "lean": f"{lean.latency.errors:,}",
            "faasd": f"{faasd.latency.errors:,}",
        },
    ]
    machine = report.machine
    loop = "uvloop" if machine.get("uvloop") else "asyncio"
    print_table(
        rows,
        [
            ("metric", "metric"),
            ("lean", "lean"),
            ("faasd", "faasd"),
            ("ratio", "lean/faasd"),
            ("target", "Junctiond target"),
            ("met", "met"),
        ],
        title=(
            f"lean vs faasd backend ({machine.get('cpus_usable')} CPUs, Python {machine.get('python')}, "
            f"{loop}; equal load: {report.rate_source})"
        ),
    )
    if report.cold_starts:
        cold_rows = [
            {
                "mode": cold.label,
                "cold": f"{cold.cold_starts} / {cold.invocations}",
                "start_p50": _ms(cold.start_p50_s),
                "start_p99": _ms(cold.start_p99_s),
                "client_p50": _ms(cold.client_p50_s),
                "client_p99": _ms(cold.client_p99_s),
                "target": "-" if cold.target_s is None else f"p50 <= {cold.target_s * 1e3:g} ms",
                "met": _yes_no(cold.met),
            }
            for cold in report.cold_starts
        ]
        print_table(
            cold_rows,
            [
                ("mode", "spawn (lean backend)"),
                ("cold", "cold / invocations"),
                ("start_p50", "server start p50"),
                ("start_p99", "server start p99"),
                ("client_p50", "cold invoke p50"),
                ("client_p99", "cold invoke p99"),
                ("target", "target"),
                ("met", "met"),
            ],
            title="cold starts (keep-alive fixed:1ms; server start = spawn to handler loaded)",
        )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"elapsed {report.elapsed_s:.0f} s", highlight=False)


def _progress(line: str) -> None:
    print(f"bench {line}", file=sys.stderr, flush=True)


def build_options(
    *,
    quick: bool,
    duration: float | None = None,
    connections: int | None = None,
    rate: float | None = None,
    cold_starts: int | None = None,
    search: bool | None = None,
) -> BenchOptions:
    """Options from the command line: ``--quick`` picks short defaults, explicit options win."""
    from strato.faas.live.bench import BenchOptions, with_overrides

    base = BenchOptions.quick() if quick else BenchOptions()
    return with_overrides(
        base,
        duration_s=duration,
        connections=connections,
        rate_rps=rate,
        cold_starts=cold_starts,
        search=search,
    )


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def bench(
        duration: Annotated[
            float | None,
            typer.Option(help="Seconds of each throughput and latency run [default: 10, 1 with --quick]"),
        ] = None,
        connections: Annotated[
            int | None,
            typer.Option(help="Closed-loop connections, and the open-loop connection cap [default: 16]"),
        ] = None,
        rate: Annotated[
            float | None,
            typer.Option(help="Equal offered load in rps [default: half the lower max throughput]"),
        ] = None,
        cold_starts: Annotated[
            int | None,
            typer.Option(help="Cold invocations per spawn mode, 0 to skip [default: 40, 10 with --quick]"),
        ] = None,
        search: Annotated[
            bool | None,
            typer.Option(
                "--search/--no-search",
                help="Search each backend's highest sustainable open-loop rate (~30 s) "
                "[default: on, off with --quick]",
            ),
        ] = None,
        quick: Annotated[bool, typer.Option(help="Short runs for a smoke test (about 20 s)")] = False,
        json_output: Annotated[bool, typer.Option("--json", help="Print the full report as JSON")] = False,
        plot: Annotated[
            Path | None,
            typer.Option(help="Write a PNG: latency CDFs at equal load and the throughputs"),
        ] = None,
    ) -> None:
        """Benchmark the lean backend against the faasd-like one, and cold starts per spawn mode.

        Runs real servers one after the other on this machine, with the load generator in its own
        process, and compares the ratios to Junctiond's claims (median and P99 latency at equal load,
        throughput).
        """
        from strato.faas.live.bench import plot_report, run_bench

        # Found out before the run, not after minutes of measurements.
        if plot is not None and not plot.resolve().parent.is_dir():
            raise ConfigError(f"--plot: directory {plot.resolve().parent} does not exist")
        options = build_options(
            quick=quick,
            duration=duration,
            connections=connections,
            rate=rate,
            cold_starts=cold_starts,
            search=search,
        )
        report = run_bench(options, progress=_progress)
        if plot is not None:
            plot_report(report, plot)
            _progress(f"wrote {plot}")
        if json_output:
            print_json(report.to_json())
        else:
            print_report(report)
