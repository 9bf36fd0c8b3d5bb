"""``strato faas bench``: the lean and faasd backends side by side over repeated runs, and cold starts."""

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
    from strato.faas.live.bench import (
        BenchOptions,
        BenchReport,
        Measured,
        PhaseCpu,
        Ratio,
        RatioSpread,
        RunResult,
    )


def _ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e3:,.2f} ms"


def _us(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds * 1e6:,.0f} us"


def _rps(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.0f} rps"


def _yes_no(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def _value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    # A ratio far below its target (a lean p50 against an overloaded faasd) keeps two significant digits.
    return f"{value:.2g}{unit}" if 0 < abs(value) < 0.1 else f"{value:.2f}{unit}"


def _ratio_cells(ratio: Ratio, unit: str = "") -> dict[str, str]:
    comparison = "<=" if ratio.better == "lower" else ">="
    return {
        "ratio": _value(ratio.value, unit),
        "target": f"{comparison} {ratio.target:g}{unit}",
        "met": _yes_no(ratio.met),
    }


def _divide(numerator: float, denominator: float) -> float | None:
    ok = math.isfinite(numerator) and math.isfinite(denominator) and denominator > 0
    return numerator / denominator if ok else None


def _generator(name: str) -> str:
    return "wrk" if name == "wrk" else "Python generator"


def _generator_cpu(phase: Measured) -> str:
    per_request, share = phase.generator_cpu_per_request_s, phase.generator_core_share
    if per_request is None or share is None:
        return "-"
    return f"{per_request * 1e6:,.1f} us/req, {share:.0%} core"


def _run_table(run: RunResult, options: BenchOptions) -> None:
    """One run in detail: backends side by side, each generator's numbers and CPU."""
    lean, faasd = run.backends["lean"], run.backends["faasd"]
    if run.throughput_source == "wrk":
        # Shown beside wrk's, which the target is judged on.
        python_cells = {
            "ratio": _value(_divide(lean.throughput.achieved_rps, faasd.throughput.achieved_rps), "x")
        }
    else:
        python_cells = _ratio_cells(run.ratios["throughput"], "x")
    conn = f"{options.connections} conn."
    rows: list[dict[str, Any]] = [
        {
            "metric": f"max throughput, Python generator (closed loop, {conn}, {options.duration_s:g} s)",
            "lean": _rps(lean.throughput.achieved_rps),
            "faasd": _rps(faasd.throughput.achieved_rps),
            **python_cells,
        },
        {
            "metric": "  errors",
            "lean": f"{lean.throughput.errors:,}",
            "faasd": f"{faasd.throughput.errors:,}",
        },
        {
            "metric": "  Python generator CPU",
            "lean": _generator_cpu(lean.throughput),
            "faasd": _generator_cpu(faasd.throughput),
        },
    ]
    if lean.wrk is not None and faasd.wrk is not None:
        rows += [
            {
                "metric": f"max throughput, wrk -t1 -c{options.connections} "
                f"-d{max(1, round(options.duration_s))}s",
                "lean": _rps(lean.wrk.achieved_rps),
                "faasd": _rps(faasd.wrk.achieved_rps),
                **_ratio_cells(run.ratios["throughput"], "x"),
            },
            {"metric": "  errors", "lean": f"{lean.wrk.errors:,}", "faasd": f"{faasd.wrk.errors:,}"},
            {"metric": "  wrk CPU", "lean": _generator_cpu(lean.wrk), "faasd": _generator_cpu(faasd.wrk)},
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
            "metric": f"latency p50 at {run.rate_rps:,.0f} rps (open loop, Poisson)",
            "lean": _ms(lean.latency.p50_s),
            "faasd": _ms(faasd.latency.p50_s),
            **_ratio_cells(run.ratios["median_latency"]),
        },
        {"metric": "  latency p90", "lean": _ms(lean.latency.p90_s), "faasd": _ms(faasd.latency.p90_s)},
        {
            "metric": "  latency p99",
            "lean": _ms(lean.latency.p99_s),
            "faasd": _ms(faasd.latency.p99_s),
            **_ratio_cells(run.ratios["p99_latency"]),
        },
        {
            "metric": "  achieved rate",
            "lean": _rps(lean.latency.achieved_rps),
            "faasd": _rps(faasd.latency.achieved_rps),
        },
        {"metric": "  errors", "lean": f"{lean.latency.errors:,}", "faasd": f"{faasd.latency.errors:,}"},
        {
            "metric": "  Python generator CPU",
            "lean": _generator_cpu(lean.latency),
            "faasd": _generator_cpu(faasd.latency),
        },
    ]
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
            f"lean vs faasd backend, throughput judged on {_generator(run.throughput_source)}; "
            f"equal load: {run.rate_source}"
        ),
    )


def _runs_table(report: BenchReport) -> None:
    """One line per run: the judged numbers and ratios."""
    rows = []
    for run in report.runs:
        lean, faasd = run.backends["lean"], run.backends["faasd"]
        source = run.throughput_source
        floor = run.ratios.get("floor_p50")
        rows.append(
            {
                "run": str(run.index),
                "first": run.order[0],
                "lean_rps": _rps(lean.max_throughput(source).achieved_rps),
                "faasd_rps": _rps(faasd.max_throughput(source).achieved_rps),
                "throughput": _value(run.ratios["throughput"].value, "x"),
                "rate": _rps(run.rate_rps),
                "p50": _value(run.ratios["median_latency"].value),
                "p99": _value(run.ratios["p99_latency"].value),
                "floor": _value(floor.value if floor else None),
                "busy": "-" if run.busy_share_before is None else f"{run.busy_share_before:.0%}",
            }
        )
    print_table(
        rows,
        [
            ("run", "run"),
            ("first", "loaded first"),
            ("lean_rps", "lean max"),
            ("faasd_rps", "faasd max"),
            ("throughput", "throughput lean/faasd"),
            ("rate", "equal load"),
            ("p50", "p50 lean/faasd"),
            ("p99", "p99 lean/faasd"),
            ("floor", "low-load p50 lean/echo"),
            ("busy", "busy before"),
        ],
        title=(
            f"{len(report.runs)} runs, interleaved; throughput judged on {_generator(report.load_generator)}"
        ),
    )


def _summary_table(spreads: tuple[RatioSpread, ...]) -> None:
    def unit(item: RatioSpread) -> str:
        return "x" if item.key == "throughput" else ""

    rows = [
        {
            "metric": item.metric,
            "source": _generator(item.source) if item.source in ("wrk", "python") else item.source,
            "runs": " ".join(_value(value, unit(item)) for value in item.values),
            "min": _value(item.minimum, unit(item)),
            "median": _value(item.median, unit(item)),
            "max": _value(item.maximum, unit(item)),
            "rule": item.rule,
            "met": _yes_no(item.met),
        }
        for item in spreads
    ]
    print_table(
        rows,
        [
            ("metric", "ratio"),
            ("source", "measured with"),
            ("runs", "per run"),
            ("min", "min"),
            ("median", "median"),
            ("max", "max"),
            ("rule", "target"),
            ("met", "met"),
        ],
        title="the targets over the runs (lean/faasd; the floor: lean/plain echo)",
    )


def _floor_table(report: BenchReport) -> None:
    rows = []
    for run in report.runs:
        if run.floor is None:
            continue
        floor = run.floor
        rows.append(
            {
                "run": str(run.index),
                "lean": _us(floor.lean.p50_s),
                "lean_p99": _us(floor.lean.p99_s),
                "plain": _us(floor.plain.p50_s),
                "plain_p99": _us(floor.plain.p99_s),
                **_ratio_cells(floor.ratio),
            }
        )
    if not rows:
        return
    options = report.options
    seconds = max(1, round(options.floor_s)) if report.load_generator == "wrk" else options.floor_s
    print_table(
        rows,
        [
            ("run", "run"),
            ("lean", "lean p50"),
            ("lean_p99", "lean p99"),
            ("plain", "plain echo p50"),
            ("plain_p99", "plain echo p99"),
            ("ratio", "lean/echo p50"),
            ("target", "target"),
            ("met", "met"),
        ],
        title=(
            f"low-load floor: one connection, closed loop, {seconds:g} s, "
            f"{_generator(report.load_generator)}; plain echo = a minimal Python HTTP server, "
            "TCP on 127.0.0.1"
        ),
    )


def _span(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return format(low, fmt) if format(low, fmt) == format(high, fmt) else f"{low:{fmt}}-{high:{fmt}}"


def _cpu_table(report: BenchReport) -> None:
    """Per load phase: what the generator cost and what else the machine did (ranges over the runs)."""
    grouped: dict[tuple[str, str, str], list[Measured]] = {}
    for run in report.runs:
        for server, phase_name, phase in run.phases():
            grouped.setdefault((server, phase_name, phase.generator), []).append(phase)
    rows = []
    for (server, phase_name, generator), phases in grouped.items():
        per_request = [p.generator_cpu_per_request_s * 1e6 for p in phases if p.generator_cpu_per_request_s]
        shares = [p.generator_core_share * 100 for p in phases if p.generator_core_share is not None]
        cpus: list[PhaseCpu] = [p.cpu for p in phases if p.cpu is not None]
        rows.append(
            {
                "server": server,
                "phase": phase_name,
                "generator": _generator(generator),
                "rps": _span([p.achieved_rps for p in phases], ",.0f"),
                "per_request": _span(per_request, ",.1f") + " us" if per_request else "-",
                "share": _span(shares, ".0f") + " %" if shares else "-",
                "server_cores": _span([c.server_cores for c in cpus], ".2f"),
                "other": _span([c.other_cores for c in cpus], ".2f"),
            }
        )
    runs = len(report.runs)
    print_table(
        rows,
        [
            ("server", "server"),
            ("phase", "phase"),
            ("generator", "load generator"),
            ("rps", "rps"),
            ("per_request", "generator CPU / request"),
            ("share", "generator, % of a core"),
            ("server_cores", "server, cores"),
            ("other", "other work, cores"),
        ],
        title=(
            "where the CPU went per load phase"
            + (f" (min-max over {runs} runs)" if runs > 1 else "")
            + "; other work = the machine's busy time less the servers, generators and bench"
        ),
    )


def print_report(report: BenchReport) -> None:
    """The report as tables (one run in detail or the runs and their spread, the low-load floor, the CPU
    per phase, cold starts) and its warnings."""
    machine = report.machine
    loop = "uvloop" if machine.get("uvloop") else "asyncio"
    wrk = machine.get("wrk") or {}
    console.print(
        f"machine: {machine.get('cpus_usable')} CPUs, Python {machine.get('python')}, {loop}; "
        f"wrk: {wrk.get('version') or wrk.get('path') or 'not used'}",
        highlight=False,
        markup=False,  # wrk's version says "[epoll]"
    )
    if len(report.runs) == 1:
        _run_table(report.runs[0], report.options)
    else:
        _runs_table(report)
        _summary_table(report.summary.spreads)
    _floor_table(report)
    _cpu_table(report)
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
    verdict = "all met" if report.summary.met else "NOT all met"
    console.print(
        f"targets over {len(report.runs)} run(s), throughput judged on "
        f"{_generator(report.load_generator)}: {verdict}",
        highlight=False,
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
    repeat: int | None = None,
    load_generator: str | None = None,
    floor: float | None = None,
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
        repeat=repeat,
        load_generator=load_generator,
        floor_s=floor,
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
        repeat: Annotated[
            int | None,
            typer.Option(
                help="Complete runs, interleaved (odd runs load lean first, even runs faasd); each ratio's "
                "min/median/max is reported [default: 1]"
            ),
        ] = None,
        load_generator: Annotated[
            str | None,
            typer.Option(
                help="What throughput and the low-load floor are judged on: wrk (error if not installed), "
                "python, or auto (wrk when installed) [default: auto]"
            ),
        ] = None,
        floor_duration: Annotated[
            float | None,
            typer.Option(
                help="Seconds of each low-load run (one connection: lean and a plain Python echo server), "
                "0 to skip [default: 3, 1 with --quick]"
            ),
        ] = None,
        quick: Annotated[bool, typer.Option(help="Short runs for a smoke test (about 30 s)")] = False,
        json_output: Annotated[bool, typer.Option("--json", help="Print the full report as JSON")] = False,
        plot: Annotated[
            Path | None,
            typer.Option(help="Write a PNG: latency CDFs at equal load and the throughputs"),
        ] = None,
    ) -> None:
        """Benchmark the lean backend against the faasd-like one, and cold starts per spawn mode.

        Runs real servers one after the other on this machine, with the load generator in its own
        process (and wrk beside it when installed), and compares the ratios to Junctiond's claims
        (median and P99 latency at equal load, throughput) over --repeat runs; also the lean backend's
        low-load p50 against a plain Python echo server, and what CPU each load generator used.
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
            repeat=repeat,
            load_generator=load_generator,
            floor=floor_duration,
        )
        report = run_bench(options, progress=_progress)
        if plot is not None:
            plot_report(report, plot)
            _progress(f"wrote {plot}")
        if json_output:
            print_json(report.to_json())
        else:
            print_report(report)
