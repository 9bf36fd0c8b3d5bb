"""``strato llm``: LLM inference clusters (Splitwise)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console, print_table
from strato.errors import ConfigError

app = typer.Typer(
    help="LLM inference clusters: baselines and Splitwise phase splitting.", no_args_is_help=True
)


@app.command()
@friendly_errors
def simulate(
    trace: Annotated[
        str, typer.Option(help="synthetic[:kind=code|conv], azure-llm-2023:code|conv, or a CSV path")
    ] = "synthetic:kind=code",
    design: Annotated[
        str, typer.Option(help="baseline-a100, baseline-h100, splitwise-aa|hh|ha|hhcap")
    ] = "splitwise-hh",
    prompt: Annotated[int | None, typer.Option(help="Prompt machines (splitwise designs)")] = None,
    token: Annotated[int | None, typer.Option(help="Token machines (splitwise designs)")] = None,
    machines: Annotated[int | None, typer.Option(help="Machines (baseline designs)")] = None,
    model: Annotated[str, typer.Option(help="Model from the catalog")] = "llama2-70b",
    rate: Annotated[
        float | None, typer.Option(help="Poisson arrivals at this rate (req/s), token sizes resampled")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds of arrivals")] = None,
    perf: Annotated[
        str | None, typer.Option(help="analytic (default), profile, or a profile CSV path")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the arrivals")] = 0,
    public_simulator: Annotated[
        bool,
        typer.Option(
            "--public-simulator",
            help="The public Splitwise simulator's choices: its iteration-time model on the profile CSV, "
            "scheduler settings, metric conventions and (with --rate) its seeded trace recipe",
        ),
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write latency CDFs (PNG) here")] = None,
) -> None:
    """Simulate one design on one trace: latencies, the nine SLO checks, cost and power."""
    from strato.llm.simulate import SimulationSpec, latency_cdf_figure, run_simulation
    from strato.traces.llm import load_requests
    from strato.traces.spec import is_synthetic

    if public_simulator and rate is not None and not is_synthetic(trace):
        from strato.traces.llm import splitwise_sim_requests

        base = load_requests(trace)
        requests = splitwise_sim_requests(base, rate, duration or 600.0, seed=seed)
    else:
        requests = load_requests(trace, rate_rps=rate, duration_s=duration, seed=seed)
    result, times = run_simulation(
        SimulationSpec(
            design=design,
            model=model,
            prompt=prompt,
            token=token,
            machines=machines,
            perf=perf,
            public_simulator=public_simulator,
        ),
        requests,
    )
    if plot is not None:
        latency_cdf_figure([(result.design, times)], result.conventions).savefig(plot, dpi=120)
    if json_output:
        print_json(result.to_json())
        return
    rows = [
        {"metric": name, **values.to_row()}
        for name, values in (("TTFT s", result.ttft_s), ("TBT s", result.tbt_s), ("E2E s", result.e2e_s))
    ]
    print_table(
        rows,
        [("metric", "metric"), ("p50", "p50"), ("p90", "p90"), ("p99", "p99")],
        title=f"{result.design} on {result.trace}",
        formats={"p50": ".4f", "p90": ".4f", "p99": ".4f"},
    )
    failed = [
        f"{c.metric} p{c.percentile} {c.slowdown:.2f}x > {c.limit}x"
        if c.slowdown is not None
        else f"{c.metric} p{c.percentile} (no request has it)"
        for c in result.slo_checks
        if not c.met
    ]
    throughput = "-" if result.throughput_rps is None else f"{result.throughput_rps:.2f}"
    console.print(
        f"{result.completed:,}/{result.requests:,} requests, throughput "
        f"{throughput} req/s; SLOs {'met' if result.slo_met else 'MISSED: '}"
        f"{', '.join(failed)}; cost ${result.cost_per_hour:.1f}/h, power {result.power_kw:.1f} kW; "
        f"perf model {result.perf}"
    )


@app.command()
@friendly_errors
def plan(
    budget: Annotated[
        str | None, typer.Option(help="cost=USD_PER_HOUR or power=KW: the most a cluster may take")
    ] = None,
    shape: Annotated[
        list[str] | None,
        typer.Option(
            "--shape", help="Evaluate this shape instead of searching: DESIGN:N or DESIGN:P+T (repeatable)"
        ),
    ] = None,
    public_simulator: Annotated[
        bool,
        typer.Option("--public-simulator", help="The public Splitwise simulator's choices and trace recipe"),
    ] = False,
    trace: Annotated[
        str, typer.Option(help="Token sizes: synthetic[:kind=code|conv], azure-llm-2023:code|conv, a CSV")
    ] = "synthetic:kind=code",
    objective: Annotated[str, typer.Option(help="throughput, or cost/power for --rate")] = "throughput",
    rate: Annotated[
        float | None, typer.Option(help="Request rate to sustain (objectives cost and power)")
    ] = None,
    design: Annotated[
        list[str] | None, typer.Option("--design", help="Designs to search (default: all)")
    ] = None,
    model: Annotated[str, typer.Option(help="Model from the catalog")] = "llama2-70b",
    perf: Annotated[
        str | None, typer.Option(help="analytic (default), profile, or a profile CSV path")
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds of arrivals per simulation")] = 120.0,
    splits: Annotated[int, typer.Option(help="At most this many prompt/token splits per design")] = 8,
    workers: Annotated[int, typer.Option(help="Local worker processes")] = 2,
    dask: Annotated[
        str | None, typer.Option(help="Run the search on a Dask cluster (tcp://HOST:PORT)")
    ] = None,
    top: Annotated[int, typer.Option(help="Rows to print")] = 10,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write throughput vs cost and power (PNG) here")] = None,
) -> None:
    """Search designs and pool sizes within a budget for the highest rate that meets all nine SLOs."""
    from strato.llm.designs import design_names
    from strato.llm.plan import PlanOptions, parse_budget, rank, tradeoff_figure
    from strato.llm.plan import plan as run_plan
    from strato.traces.llm import load_requests

    if budget is None and not shape:
        raise ConfigError("give --budget cost=..|power=.. to search, or --shape to evaluate given clusters")
    kind, amount = parse_budget(budget) if budget is not None else ("cost", math.inf)
    options = PlanOptions(
        kind,
        amount,
        fixed_shapes=tuple(shape or ()),
        public_simulator=public_simulator,
        designs=tuple(design or design_names()),
        model=model,
        perf=perf,
        duration_s=duration,
        max_splits=splits,
        workers=workers,
        dask_address=dask,
    )
    base = load_requests(trace)
    rows = rank(
        run_plan(base, options, show_progress=False if json_output else None),
        objective,
        rate,
    )
    if plot is not None:
        tradeoff_figure(rows, f"clusters within {kind} {amount:g}" if budget else "given clusters").savefig(
            plot, dpi=120
        )
    if json_output:
        print_json([row.to_json() for row in rows])
        return
    print_table(
        [row.to_row() for row in rows[:top]],
        [
            ("design", "design"),
            ("rate_rps", "sustained req/s"),
            ("cost_per_hour", "$/h"),
            ("power_kw", "kW"),
            ("machines", "machines"),
        ],
        title=f"best clusters within {kind} {amount:g} ({objective})",
        formats={"rate_rps": ".1f", "cost_per_hour": ",.0f", "power_kw": ",.1f"},
    )
