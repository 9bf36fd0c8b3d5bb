"""``strato power control|replay-trace|publish``: controllers on real GPUs, on recorded traces, to Ganglia.

The ``power`` typer app lives elsewhere; it calls :func:`register` to add these commands.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strato.cli.common import duration_option, friendly_errors, power_option, print_json
from strato.core.console import console, error_console
from strato.errors import ConfigError, UnavailableError

if TYPE_CHECKING:
    from strato.monitor.publish_power import RowSeries
    from strato.power.tracedrive import TraceRun

_LLAMA_TRACE = Path("llm-gpu-power/plots/parameter-scale-input-test/raw_stats/llama2-70b")


def register(app: typer.Typer) -> None:
    """Add ``control``, ``replay-trace`` and ``publish`` to ``app`` (the ``strato power`` group)."""
    app.command("control")(control)
    app.command("replay-trace")(replay_trace)
    app.command("publish")(publish)


def parse_gpus(text: str, option: str) -> list[int]:
    """``4,5,6,7`` or ``0-7`` or ``0-3,6`` -> GPU indices, in order, without repeats."""
    gpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        if not (low.isdigit() and (not dash or high.isdigit())):
            raise ConfigError(f"{option}: {part!r} is not a GPU index or range such as 4 or 0-7")
        span = range(int(low), int(high) + 1) if dash else range(int(low), int(low) + 1)
        if not span:
            raise ConfigError(f"{option}: range {part!r} is empty")
        gpus.extend(g for g in span if g not in gpus)
    return gpus


def _default_trace() -> Path:
    from strato.traces.datasets import data_root

    return data_root() / _LLAMA_TRACE


@friendly_errors
def control(
    budget: Annotated[str, typer.Option(help="Power budget of the controlled GPUs, e.g. 2.4kW")],
    controller: Annotated[
        str, typer.Option(help="none, capping[:threshold=..], static:MHZ, polca[:t1=..,low1=..]")
    ] = "polca",
    low_priority_gpus: Annotated[
        str, typer.Option(help="GPU indices of the low-priority class, e.g. 4,5,6,7 (default none)")
    ] = "",
    gpus: Annotated[
        str | None,
        typer.Option(help="GPUs to control, e.g. 0-7 (default every GPU; with --telemetry-file, its GPUs)"),
    ] = None,
    telemetry_interval: Annotated[
        str, typer.Option("--telemetry", help="How often to read power and decide, e.g. 2s")
    ] = "2s",
    telemetry: Annotated[
        str,
        typer.Option(
            "--telemetry-source",
            help="Power from: nvml, or nvidia-smi (a running --query-gpu ... -lms process)",
        ),
    ] = "nvml",
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long, e.g. 60s (default: Ctrl-C)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print each NVML call per GPU instead of making it")
    ] = False,
    telemetry_file: Annotated[
        Path | None,
        typer.Option(
            help="With --dry-run: replay this recorded nvidia-smi CSV as telemetry (no GPU needed), "
            "as fast as it reads"
        ),
    ] = None,
    gpu: Annotated[
        str, typer.Option(help="Without a GPU (--telemetry-file): the catalog GPU whose clock range to check")
    ] = "a100-80gb",
    json_output: Annotated[bool, typer.Option("--json", help="Print the run as JSON at the end")] = False,
) -> None:
    """Run a power controller live on this machine's GPUs through NVML: every telemetry interval read the
    GPUs' power, ask the controller, lock clocks / set power limits at once; on exit every knob it set is
    reset. Needs a GPU (exit 5 without one) unless --dry-run --telemetry-file replays a recording."""
    from strato.power import actuators as act
    from strato.power.catalog import power_model
    from strato.power.controllers import parse_controller

    budget_w = power_option(budget, "--budget")
    interval_s = duration_option(telemetry_interval, "--telemetry")
    duration_s = None if duration is None else duration_option(duration, "--duration")
    ctl = parse_controller(controller)
    low = parse_gpus(low_priority_gpus, "--low-priority-gpus") if low_priority_gpus else []
    chosen = parse_gpus(gpus, "--gpus") if gpus is not None else None
    if telemetry not in ("nvml", "nvidia-smi"):
        raise ConfigError(f"--telemetry-source must be nvml or nvidia-smi, not {telemetry!r}")
    if telemetry_file is not None and not dry_run:
        raise ConfigError(
            "--telemetry-file replays a recording: it needs --dry-run (nothing real to control)"
        )
    out = error_console if json_output else console

    def echo(line: str) -> None:
        out.print(line, highlight=False, markup=False, soft_wrap=True)

    replay: act.ReplayTelemetry | None = None
    source: act.Telemetry | None = None
    actuator: act.Actuator
    if telemetry_file is not None:
        replay = act.ReplayTelemetry(telemetry_file, interval_s, watch=chosen)
        ids = list(replay.watched)
        try:
            actuator = act.NvmlActuator(ids, dry_run=True, echo=echo)
        except UnavailableError:
            # No GPU: the ranges come from the catalog entry, said in the banner.
            clocks = power_model(gpu, "llama2-70b").clocks
            actuator = act.SimulatedActuator.for_clocks(clocks, ids, echo=echo)
        source = replay
        if duration_s is None:
            duration_s = replay.duration_s
    else:
        try:
            actuator = act.NvmlActuator(chosen, dry_run=dry_run, echo=echo)
        except UnavailableError as error:
            raise UnavailableError(
                f"{error}; without a GPU, --dry-run --telemetry-file FILE replays a recorded nvidia-smi CSV"
            ) from None
    classes = {"low": low}
    groups = act.check_classes(actuator, classes)
    nvsmi: act.NvidiaSmiTelemetry | None = None
    try:
        if replay is None and telemetry == "nvidia-smi":
            nvsmi = act.NvidiaSmiTelemetry(
                actuator.gpus, interval_ms=max(1, round(min(interval_s, 1.0) * 100))
            )
            nvsmi.wait_ready()
            source = nvsmi
        limits = actuator.clocks()
        # Bound here (run_control binds it again) so the banner can say what it resolved, e.g. capping's
        # automatic cap, which exists only once the controller knows the GPUs and the budget.
        ctl.bind(act.row_info(actuator, budget_w, groups))
        echo(
            f"controlling GPUs {list(actuator.gpus)} ({limits.name}, "
            f"{limits.min_mhz:g}..{limits.max_mhz:g} MHz"
            f"{'' if isinstance(actuator, act.NvmlActuator) else ', from the catalog: no GPU here'}), "
            f"low priority {list(groups['low'])}, budget {budget_w:g} W, {ctl.describe()}, every "
            f"{interval_s:g} s{' (dry run)' if dry_run else ''}"
            + (f", telemetry replayed from {replay.source}" if replay is not None else "")
        )

        def show(step: act.ControlStep) -> None:
            if step.actions:
                echo(
                    f"t={step.time_s:8.1f}s power {step.power_w:8.1f} W ({step.share:6.1%}): "
                    + ", ".join(step.actions)
                )

        run = act.run_control(
            ctl,
            actuator,
            budget_w,
            interval_s,
            groups,
            telemetry=source,
            duration_s=duration_s,
            clock=replay.clock if replay is not None else time.monotonic,
            sleep=replay.sleep if replay is not None else time.sleep,
            on_step=show,
        )
    finally:
        if nvsmi is not None:
            nvsmi.close()
        actuator.close()
    if json_output:
        print_json(run.to_json())
        return
    console.print(
        f"{len(run.steps)} decisions, peak {run.peak_share:.1%} of the budget, "
        f"{run.brake_events} brake events, "
        f"{len(run.settings)} settings, {len(run.released)} reset at the end",
        highlight=False,
    )


def _trace_runs(
    trace: Path | None, servers: int, budget_servers: int, budget: str | None, budget_from: str,
    controller: str, telemetry_interval: str, delay: str, brake_delay: str, duration: str | None,
    low_share: float, model: str, seed: int, rows: int = 1,
) -> list[TraceRun]:  # fmt: skip
    from strato.power.controllers import parse_controller
    from strato.power.tracedrive import TraceRowSpec, load_traces, run_trace

    path = trace if trace is not None else _default_trace()
    parse_controller(controller)  # an unknown controller fails before the traces are read
    if budget_from not in ("rated", "peak"):
        raise ConfigError(f"--budget-from must be rated or peak, not {budget_from!r}")
    spec = TraceRowSpec(
        servers=servers,
        budget_servers=budget_servers,
        budget_w=None if budget is None else power_option(budget, "--budget"),
        budget_from="rated" if budget_from == "rated" else "peak",
        model=model,
        low_priority_share=low_share,
        telemetry_s=duration_option(telemetry_interval, "--telemetry"),
        actuation_delay_s=duration_option(delay, "--actuation-delay"),
        brake_delay_s=duration_option(brake_delay, "--brake-delay"),
        duration_s=None if duration is None else duration_option(duration, "--duration"),
    )
    traces = load_traces(path)
    return [
        run_trace(parse_controller(controller), traces, replace(spec, seed=seed + k)) for k in range(rows)
    ]


TraceOpt = Annotated[
    Path | None,
    typer.Option(help="An nvidia-smi CSV or a folder of them (default: the shared llama2-70b A100 trace)"),
]


@friendly_errors
def replay_trace(
    trace: TraceOpt = None,
    servers: Annotated[int, typer.Option(help="Servers in the row")] = 52,
    budget_servers: Annotated[int, typer.Option(help="Servers the budget was provisioned for")] = 40,
    budget: Annotated[
        str | None, typer.Option(help="Row budget, e.g. 260kW (default: --budget-from)")
    ] = None,
    budget_from: Annotated[
        str, typer.Option(help="rated: budget servers x rated power; peak: peak of the budget servers' row")
    ] = "rated",
    controller: Annotated[str, typer.Option(help="none, capping, static:MHZ, polca[:k=v,...]")] = "polca",
    telemetry_interval: Annotated[str, typer.Option("--telemetry", help="Row telemetry interval")] = "2s",
    delay: Annotated[str, typer.Option("--actuation-delay", help="Out-of-band actuation delay")] = "40s",
    brake_delay: Annotated[str, typer.Option(help="Power-brake delay")] = "5s",
    duration: Annotated[
        str | None, typer.Option(help="Row power span (default: the longest recording)")
    ] = None,
    low_share: Annotated[
        float, typer.Option("--low-priority", help="Share of servers in the low-priority class")
    ] = 0.5,
    model: Annotated[
        str, typer.Option(help="Power model's LLM (the rest-of-server and scaling law)")
    ] = "llama2-70b",
    seed: Annotated[int, typer.Option(help="Seed of the servers' runs and time offsets")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run as JSON")] = False,
) -> None:
    """Run a controller over recorded nvidia-smi power traces scaled to a row (no engine): each server's
    GPUs follow a recorded run from a random offset; actions scale the recorded power by the model's law
    after their delay."""
    (run,) = _trace_runs(
        trace, servers, budget_servers, budget, budget_from, controller, telemetry_interval, delay,
        brake_delay, duration, low_share, model, seed,
    )  # fmt: skip
    summary = run.to_json()
    if json_output:
        print_json(summary)
        return
    above = ", ".join(f"{k} {v:.1f} s" for k, v in summary["time_above_s"].items())
    console.print(
        f"{run.controller} on {run.servers} servers (budget {run.budget_w / 1e3:.1f} kW: {run.budget_from}): "
        f"peak {run.peak_share:.1%} of budget (no control {summary['uncontrolled_peak_share']:.1%}), "
        f"time above {above}; {run.brake_events} brake events, {len(run.actions)} actions",
        highlight=False,
    )


def _simulated_rows(
    span: str, servers: int, budget_servers: int, budget: str | None, controller: str, peak_rate: str,
    start: str, seed: int, rows: int,
) -> list[RowSeries]:  # fmt: skip
    """Rows simulated on the engine as ``strato power simulate`` runs one (synthetic coding-sized requests,
    a diurnal rate from ``start``), each with its own seed."""
    from strato.cli.power import parse_clock_time, parse_rate
    from strato.monitor.publish_power import simulated_series
    from strato.power.controllers import parse_controller
    from strato.power.row import RowSimulator, RowSpec, RowWorkload
    from strato.traces.llm import load_requests

    seconds = duration_option(span, "--simulate")
    rate = parse_rate(peak_rate)
    start_s = parse_clock_time(start)
    parse_controller(controller)
    spec = RowSpec(
        servers=servers,
        budget_servers=budget_servers,
        budget_w=None if budget is None else power_option(budget, "--budget"),
    )
    # Only the token sizes come from the synthetic trace: an hour of it is plenty to resample from.
    base = load_requests("synthetic:kind=code", duration_s=3600.0, seed=seed)
    series = []
    for k in range(rows):
        workload = RowWorkload(base, rate, seconds, start_s=start_s, seed=seed + k)
        simulator = RowSimulator(spec, workload, parse_controller(controller))
        run = simulator.run()
        series.append(simulated_series(run, max_mhz=simulator.clocks.max_mhz, brake_mhz=spec.brake_mhz))
    return series


@friendly_errors
def publish(
    gmond: Annotated[
        str, typer.Option(help="The gmond's UDP receive channel (host:port)")
    ] = "127.0.0.1:8649",
    trace: TraceOpt = None,
    simulate: Annotated[
        str | None,
        typer.Option(
            help="Publish rows simulated on the engine for this long (e.g. 10m) instead of trace-driven rows"
        ),
    ] = None,
    rows: Annotated[int, typer.Option(help="Rows to publish (each its own seed), one Ganglia host each")] = 1,
    servers: Annotated[int, typer.Option(help="Servers per row")] = 52,
    budget_servers: Annotated[int, typer.Option(help="Servers the budget was provisioned for")] = 40,
    budget: Annotated[str | None, typer.Option(help="Row budget, e.g. 260kW")] = None,
    budget_from: Annotated[str, typer.Option(help="rated or peak (see replay-trace; traces only)")] = "rated",
    controller: Annotated[str, typer.Option(help="none, capping, static:MHZ, polca[:k=v,...]")] = "polca",
    peak_rate: Annotated[
        str | None, typer.Option(help="With --simulate: req/s per server at the day's peak (default 0.9/s)")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="With --simulate: time of day the rows start, HH:MM (default 15:00, the peak)"),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(
            help="A plain multiplier: row seconds per wall-clock second (60: a row minute a second)"
        ),
    ] = 1.0,
    interval: Annotated[
        str, typer.Option(help="Wall-clock time between two sends of every metric, e.g. 10s or 250ms")
    ] = "1s",
    wall_duration: Annotated[
        str | None,
        typer.Option(help="Wall-clock time to publish for, e.g. 60s (default: until the rows end)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the first row")] = 0,
    prefix: Annotated[str, typer.Option(help="Host names: PREFIX-1, PREFIX-2 ...")] = "row",
    json_output: Annotated[bool, typer.Option("--json", help="Print the last values sent as JSON")] = False,
) -> None:
    """Publish rows' power to Ganglia (group power: row_power_w, budget_share, brake, low/high_clock_mhz,
    and controller_level for trace-driven rows), one spoofed host per row, so strato monitor groups such
    as 'budget_share > 0.8' (rows above 80 %) follow them. Rows are trace-driven (recorded nvidia-smi
    power, as replay-trace) or, with --simulate, simulated on the engine (as strato power simulate)."""
    from strato.monitor.gmetric import parse_address
    from strato.monitor.publish_power import publish_rows, row_names, trace_series

    parse_address(gmond)
    row_names(1, prefix)
    interval_s = duration_option(interval, "--interval")
    wall_s = None if wall_duration is None else duration_option(wall_duration, "--wall-duration")
    if rows < 1:
        raise ConfigError(f"--rows must be at least 1, got {rows}")
    if simulate is None:
        if peak_rate is not None or start is not None:
            raise ConfigError("--peak-rate and --start describe a simulated row: they need --simulate")
        runs = _trace_runs(
            trace, servers, budget_servers, budget, budget_from, controller, "2s", "40s", "5s", None, 0.5,
            "llama2-70b", seed, rows,
        )  # fmt: skip
        series = [trace_series(run) for run in runs]
    else:
        if trace is not None or budget_from != "rated":
            raise ConfigError(
                "--trace and --budget-from describe trace-driven rows: drop them with --simulate"
            )
        series = _simulated_rows(
            simulate, servers, budget_servers, budget, controller, peak_rate or "0.9/s", start or "15:00",
            seed, rows,
        )  # fmt: skip
    summary = publish_rows(
        series, gmond, speed=speed, interval_s=interval_s, duration_s=wall_s, prefix=prefix
    )
    if json_output:
        print_json({"gmond": gmond, **summary.to_json()})
        return
    for row in summary.rows:
        level = row.values.get("controller_level")
        console.print(
            f"{row.name} ({row.ip}): {row.values['row_power_w'] / 1e3:.1f} kW, "
            f"{row.values['budget_share']:.1%} of budget"
            + ("" if level is None else f", level {level:.0f}")
            + f", brake {row.values['brake']:.0f}",
            highlight=False,
        )
