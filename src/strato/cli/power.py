"""``strato power``: power oversubscription of LLM inference rows (POLCA)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strato.cli import power_live
from strato.cli.common import duration_option, friendly_errors, power_option, print_json
from strato.core.console import console, print_table
from strato.errors import ConfigError

if TYPE_CHECKING:
    from strato.power.row import RowSpec, RowWorkload

app = typer.Typer(
    help="Power oversubscription of LLM inference rows: controllers, row simulation, sweeps (POLCA).",
    no_args_is_help=True,
)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NUMBER = r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"
_RATE = re.compile(rf"^{_NUMBER}(/s|rps|req/s|/min|rpm|req/min)\s*$", re.IGNORECASE)
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


def parse_rate(text: str, option: str = "--peak-rate") -> float:
    """Requests per second from ``0.9/s``, ``0.9rps``, ``54/min``: a bare number does not say per what."""
    match = _RATE.match(text)
    if match is None:
        raise ConfigError(
            f"{option} needs a rate with its unit, requests per second per server, e.g. 0.9/s or 0.9rps "
            f"(or per minute: 54/min) (got {text!r})"
        )
    value = float(match.group(1))
    per_minute = match.group(2).lower() in ("/min", "rpm", "req/min")
    rate = value / 60.0 if per_minute else value
    if not rate > 0:
        raise ConfigError(f"{option} must be positive (got {text!r})")
    return rate


def parse_budget(text: str, option: str = "--budget") -> float | None:
    """Watts from ``260kW``, ``1.2MW``, ``40000W`` (:func:`power_option`); ``auto`` is None (the row's
    provisioned power)."""
    return None if text.strip().lower() == "auto" else power_option(text, option)


def parse_clock_time(text: str, option: str = "--start") -> float:
    """Seconds after midnight from ``HH:MM`` or ``HH:MM:SS``."""
    match = _CLOCK.match(text)
    if match is None:
        raise ConfigError(f"{option} must be a time of day HH:MM, e.g. 14:00 (got {text!r})")
    hours, minutes, seconds = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ConfigError(f"{option} must be a time of day 00:00..23:59 (got {text!r})")
    return hours * 3600.0 + minutes * 60.0 + seconds


def parse_day(text: str) -> int:
    day = text.strip().lower()[:3]
    if day not in DAYS or not text.strip():
        raise ConfigError(f"--start-day must be one of {', '.join(DAYS)} (got {text!r})")
    return DAYS.index(day)


Servers = Annotated[int, typer.Option(help="Servers in the row")]
BudgetServers = Annotated[
    int, typer.Option(help="Servers the budget was provisioned for (the budget is their rated power)")
]
Controllers = Annotated[
    list[str] | None,
    typer.Option(
        "--controller",
        help="none, capping[:threshold=..], static:MHZ, polca[:t1=0.8,t2=0.89,low1=1275,...] (repeatable)",
    ),
]
Trace = Annotated[
    str, typer.Option(help="Request sizes: synthetic[:kind=code|conv], azure-llm-2023:code|conv, or a CSV")
]
PeakRate = Annotated[
    str, typer.Option(help="Requests per second per server at the day's peak, with a unit: 0.9/s, 0.9rps")
]
Duration = Annotated[str, typer.Option(help="Simulated time, with a unit: 30m, 24h")]
StartDay = Annotated[str, typer.Option(help="Day of the week the run starts: mon..sun")]
Start = Annotated[str, typer.Option(help="Time of day the run starts, HH:MM")]
LowPriority = Annotated[
    float, typer.Option(help="Share of the row's servers (and load) that is low priority")
]
Budget = Annotated[
    str, typer.Option(help="Row power budget with a unit (260kW), or auto: budget servers x rated")
]
Telemetry = Annotated[str, typer.Option(help="Row telemetry interval, with a unit")]
ActuationDelay = Annotated[str, typer.Option(help="Out-of-band actuation delay (clock locks, caps)")]
BrakeDelay = Annotated[str, typer.Option(help="Power-brake delay")]
DesignOption = Annotated[
    str, typer.Option(help="Engine design of each class: baseline-a100, baseline-h100 ...")
]
Model = Annotated[str, typer.Option(help="LLM served (with a power model: llama2-70b, bloom-176b)")]
Seed = Annotated[int, typer.Option(help="Seed of the arrivals (every controller sees the same requests)")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")]


def _row(
    *,
    servers: int,
    budget_servers: int,
    trace: str,
    peak_rate: str,
    duration: str,
    start_day: str,
    start: str,
    low_priority: float,
    budget: str,
    telemetry: str,
    actuation_delay: str,
    brake_delay: str,
    design: str,
    model: str,
    seed: int,
) -> tuple[RowSpec, RowWorkload]:
    """Every option read and checked (units included) before anything is simulated."""
    from strato.power.row import RowSpec, RowWorkload
    from strato.traces.llm import load_requests
    from strato.traces.spec import is_synthetic

    rate = parse_rate(peak_rate)
    seconds = duration_option(duration, "--duration")
    day, start_s = parse_day(start_day), parse_clock_time(start)
    spec = RowSpec(
        servers=servers,
        budget_servers=budget_servers,
        budget_w=parse_budget(budget),
        design=design,
        model=model,
        low_priority_share=low_priority,
        telemetry_s=duration_option(telemetry, "--telemetry"),
        actuation_delay_s=duration_option(actuation_delay, "--actuation-delay"),
        brake_delay_s=duration_option(brake_delay, "--brake-delay"),
    )
    # A synthetic trace only lends its token sizes: an hour of it is plenty to resample from.
    base = load_requests(trace, duration_s=3600.0 if is_synthetic(trace) else None, seed=seed)
    workload = RowWorkload(base, rate, seconds, start_day=day, start_s=start_s, seed=seed)
    return spec, workload


POWER_COLUMNS = [
    ("controller", "controller"),
    ("servers", "servers"),
    ("added", "added"),
    ("budget_kw", "budget kW"),
    ("peak_pct", "peak % (10 Hz)"),
    ("peak_telemetry_pct", "peak % (telemetry)"),
    ("above_80_s", ">80 % s"),
    ("above_89_s", ">89 % s"),
    ("above_100_s", ">100 % s"),
    ("brake_events", "brakes"),
    ("energy_kwh", "kWh"),
    ("meets_targets", "meets targets"),
]
CLASS_COLUMNS = [
    ("controller", "controller"),
    ("class", "class"),
    ("completed", "completed"),
    ("throughput_rps", "req/s"),
    ("e2e_p50_pct", "P50 E2E %"),
    ("e2e_p99_pct", "P99 E2E %"),
    ("ttft_p50_pct", "P50 TTFT %"),
    ("ttft_p99_pct", "P99 TTFT %"),
]
POWER_FORMATS = {
    "budget_kw": ",.1f",
    "peak_pct": ".1f",
    "peak_telemetry_pct": ".1f",
    "above_80_s": ",.1f",
    "above_89_s": ",.1f",
    "above_100_s": ",.1f",
    "energy_kwh": ",.1f",
    "throughput_rps": ".2f",
    "e2e_p50_pct": "+.2f",
    "e2e_p99_pct": "+.2f",
    "ttft_p50_pct": "+.2f",
    "ttft_p99_pct": "+.2f",
    "high_p50": "+.2f",
    "low_p50": "+.2f",
    "high_p99": "+.2f",
    "low_p99": "+.2f",
}


@app.command()
@friendly_errors
def simulate(
    servers: Servers = 52,
    budget_servers: BudgetServers = 40,
    controller: Controllers = None,
    trace: Trace = "synthetic:kind=code",
    peak_rate: PeakRate = "0.9/s",
    duration: Duration = "24h",
    start_day: StartDay = "mon",
    start: Start = "00:00",
    low_priority: LowPriority = 0.5,
    budget: Budget = "auto",
    telemetry: Telemetry = "2s",
    actuation_delay: ActuationDelay = "40s",
    brake_delay: BrakeDelay = "5s",
    design: DesignOption = "baseline-a100",
    model: Model = "llama2-70b",
    seed: Seed = 0,
    json_output: Json = False,
    plot: Annotated[Path | None, typer.Option(help="Write row power over time (PNG) here")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes (one run per controller)")] = 2,
) -> None:
    """Simulate a row under its budget with each controller and with none, on the same requests."""
    from strato.power.experiment import run_experiment

    spec, workload = _row(
        servers=servers,
        budget_servers=budget_servers,
        trace=trace,
        peak_rate=peak_rate,
        duration=duration,
        start_day=start_day,
        start=start,
        low_priority=low_priority,
        budget=budget,
        telemetry=telemetry,
        actuation_delay=actuation_delay,
        brake_delay=brake_delay,
        design=design,
        model=model,
        seed=seed,
    )
    experiment = run_experiment(
        spec,
        workload,
        controller or ["polca"],
        workers=workers,
        show_progress=False if json_output else None,
    )
    if plot is not None:
        from strato.power.plots import power_figure

        power_figure(experiment).savefig(plot, dpi=120)
    if json_output:
        print_json(experiment.to_json())
        return
    rows = experiment.rows
    print_table(
        [row.to_row() for row in rows],
        POWER_COLUMNS,
        title=f"{spec.servers} servers ({rows[0].added:+d}) under {rows[0].budget_kw:,.1f} kW, "
        f"{trace} at {workload.peak_rps_per_server:g} req/s per server at the day's peak",
        formats=POWER_FORMATS,
    )
    print_table(
        [
            {"controller": row.controller, "class": impact.name, **impact.to_json()}
            for row in rows
            for impact in row.classes
        ],
        CLASS_COLUMNS,
        title="latency impact against none (same requests)",
        formats=POWER_FORMATS,
    )
    for note in experiment.runs[0].notes:
        console.print(f"note: {note}")


@app.command()
@friendly_errors
def sweep(
    added: Annotated[str, typer.Option(help="Servers added to the budget row: START:STOP:STEP")] = "0:50:5",
    budget_servers: BudgetServers = 40,
    controller: Controllers = None,
    trace: Trace = "synthetic:kind=code",
    peak_rate: PeakRate = "0.9/s",
    duration: Duration = "24h",
    start_day: StartDay = "mon",
    start: Start = "00:00",
    low_priority: LowPriority = 0.5,
    budget: Budget = "auto",
    telemetry: Telemetry = "2s",
    actuation_delay: ActuationDelay = "40s",
    brake_delay: BrakeDelay = "5s",
    design: DesignOption = "baseline-a100",
    model: Model = "llama2-70b",
    seed: Seed = 0,
    workers: Annotated[int | None, typer.Option(help="Local worker processes (default: one per CPU)")] = None,
    dask: Annotated[str | None, typer.Option(help="Run on a Dask cluster (tcp://HOST:PORT)")] = None,
    json_output: Json = False,
    plot: Annotated[Path | None, typer.Option(help="Write impact vs servers added (PNG) here")] = None,
) -> None:
    """Add servers under the same budget: each controller's impact, power and brakes per row size."""
    from strato.power.sweep import parse_added
    from strato.power.sweep import sweep as run_sweep

    points = parse_added(added)
    spec, workload = _row(
        servers=budget_servers + points[0],
        budget_servers=budget_servers,
        trace=trace,
        peak_rate=peak_rate,
        duration=duration,
        start_day=start_day,
        start=start,
        low_priority=low_priority,
        budget=budget,
        telemetry=telemetry,
        actuation_delay=actuation_delay,
        brake_delay=brake_delay,
        design=design,
        model=model,
        seed=seed,
    )
    result = run_sweep(
        spec,
        workload,
        controller or ["polca", "capping", "none"],
        points,
        workers=workers,
        dask_address=dask,
        show_progress=False if json_output else None,
    )
    if plot is not None:
        from strato.power.plots import sweep_figure

        sweep_figure(result).savefig(plot, dpi=120)
    if json_output:
        print_json(result.to_json())
        return
    table = []
    for name in result.controllers:
        for row in result.of(name):
            flat = row.to_row()
            table.append(
                {
                    **flat,
                    "controller": name,
                    "high_p50": flat.get("high_e2e_p50_pct"),
                    "low_p50": flat.get("low_e2e_p50_pct"),
                    "high_p99": flat.get("high_e2e_p99_pct"),
                    "low_p99": flat.get("low_e2e_p99_pct"),
                }
            )
    print_table(
        table,
        [
            ("controller", "controller"),
            ("added", "added"),
            ("servers", "servers"),
            ("peak_pct", "peak %"),
            ("above_89_s", ">89 % s"),
            ("above_100_s", ">100 % s"),
            ("brake_events", "brakes"),
            ("high_p50", "high P50 E2E %"),
            ("low_p50", "low P50 E2E %"),
            ("high_p99", "high P99 E2E %"),
            ("low_p99", "low P99 E2E %"),
            ("energy_kwh", "kWh"),
            ("meets_targets", "meets targets"),
        ],
        title=f"servers added under {result.budget_kw:,.1f} kW ({budget_servers} servers' budget)",
        formats=POWER_FORMATS,
    )
    for name in result.controllers:
        limit, stop = result.limit(name), result.stops_at(name)
        if limit is None:
            console.print(f"{name}: misses the targets from the first point (+{result.added[0]})")
        elif stop is None:
            console.print(f"{name}: meets the targets at every point, up to +{limit}")
        else:
            console.print(f"{name}: meets the targets up to +{limit}, stops meeting them at +{stop}")


@app.command()
@friendly_errors
def characterize(
    servers: Annotated[int, typer.Option(help="Servers in the simulated row")] = 40,
    duration: Annotated[str, typer.Option(help="Simulated time of the row, with a unit: 20m, 24h")] = "24h",
    start: Annotated[str, typer.Option(help="Time of day the row's run starts, HH:MM")] = "00:00",
    peak_rate: Annotated[
        str, typer.Option(help="Requests per second per server at the day's peak, with a unit: 0.9/s")
    ] = "0.9/s",
    trace: Annotated[str, typer.Option(help="Request sizes: synthetic:kind=code|conv or a trace")] = (
        "synthetic:kind=code"
    ),
    no_row: Annotated[
        bool, typer.Option("--no-row", help="Skip the row simulation (minutes for a day)")
    ] = False,
    no_replay: Annotated[
        bool, typer.Option("--no-replay", help="Skip replaying the traces' requests through the engine")
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option(help="Data root holding llm-gpu-power/ (default: $STRATO_DATA or ../shared/data)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the row's arrivals")] = 0,
    json_output: Json = False,
) -> None:
    """POLCA's characterisation three ways: the power model (and a row on the engine), the real A100
    nvidia-smi traces, and the paper's published figures."""
    from strato.power.characterize import characterize as run

    result = run(
        row_servers=servers,
        row_duration_s=duration_option(duration, "--duration"),
        row_start_s=parse_clock_time(start),
        row_peak_rps_per_server=parse_rate(peak_rate),
        row_sizes=trace,
        simulate=not no_row,
        replay=not no_replay,
        traces_root=data,
        seed=seed,
    )
    if json_output:
        print_json(result.to_json())
        return
    rows = [
        {"figure": figure, "model": model, "traces": traces, "paper": paper}
        for figure, model, traces, paper in result.rows()
    ]
    columns = [("figure", "figure"), ("model", "strato model"), ("traces", "real traces"), ("paper", "paper")]
    print_table(rows, columns, title="POLCA's characterisation")


power_live.register(app)
