"""``strato faas``: keep-alive simulation on traces."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strato.cli import faas_bench, faas_cache, faas_cache_bench, faas_density, faas_live
from strato.cli.common import duration_option, friendly_errors, print_json
from strato.core.console import console, print_table
from strato.core.units import parse_duration, parse_size_mb
from strato.errors import ConfigError

if TYPE_CHECKING:
    from strato.faas.keepalive import KeepAliveComparison

app = typer.Typer(help="FaaS keep-alive policies (Serverless in the Wild) on traces.", no_args_is_help=True)


def print_keepalive_table(comparison: KeepAliveComparison) -> None:
    from strato.faas.results import KEEPALIVE_FORMATS, keepalive_columns

    print_table(
        [row.to_row() for row in comparison.rows],
        keepalive_columns(comparison.rows),
        title=f"keep-alive on {comparison.title}",
        formats=KEEPALIVE_FORMATS,
    )


def _print_rules_table(comparison: KeepAliveComparison) -> None:
    from strato.faas.policies.hybrid import RULES

    rows: list[dict[str, object]] = []
    for counted in comparison.rules:
        row: dict[str, object] = {"policy": counted.policy, "decisions": sum(counted.decisions)}
        for index, (rule, share) in enumerate(counted.decision_shares().items()):
            row[rule] = f"{100.0 * share:.2f} % ({counted.apps[index]:,} apps)"
        rows.append(row)
    columns = [("policy", "policy"), ("decisions", "idle periods"), *((rule, rule) for rule in RULES)]
    print_table(
        rows, columns, title="rule behind each hybrid decision: % of idle periods (apps it decided for)"
    )


@app.command()
@friendly_errors
def simulate(
    trace: Annotated[
        str,
        typer.Option(
            help="Trace directory/file (Azure 2019 either layout, or 2021 CSV), or synthetic[:k=v,...]"
        ),
    ] = "synthetic",
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            "-p",
            help="Policy spec, repeatable: never-unload, fixed:10m, hybrid, hybrid:range=2h, greedy-dual. "
            "Default: the paper's set.",
        ),
    ] = None,
    memory_capacity: Annotated[
        str | None,
        typer.Option(help="Node memory capacity (e.g. 64GiB); idle apps are evicted in the policy's order"),
    ] = None,
    cold_start: Annotated[str, typer.Option(help="Cold-start penalty Greedy-Dual weighs (e.g. 1s)")] = "1s",
    seed: Annotated[int, typer.Option(help="Seed for spreading minute counts and sampling durations")] = 0,
    durations: Annotated[str, typer.Option(help="sampled (from the percentiles) or mean")] = "sampled",
    repeat: Annotated[
        int,
        typer.Option(min=1, help="Replay the trace this many times back to back (history for the policies)"),
    ] = 1,
    warmup: Annotated[
        str | None,
        typer.Option(
            help="Learn from but do not count this first stretch of the (repeated) trace; with a unit: 16h"
        ),
    ] = None,
    rules: Annotated[
        bool, typer.Option("--rules", help="Also show which rule made the hybrid policies' decisions")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write the trade-off figure (PNG) here")] = None,
) -> None:
    """Simulate keep-alive policies on a trace and compare cold starts and wasted memory."""
    # Imported here: scipy and matplotlib would otherwise slow every `strato faas` command down.
    from strato.faas.keepalive import compare_policies, tradeoff_figure
    from strato.faas.policies import PAPER_POLICY_SET
    from strato.traces.faas.loader import load_workload

    if rules and json_output:
        raise ConfigError("--rules prints a table; leave out --json")
    if durations not in ("sampled", "mean"):
        raise ConfigError(f"--durations must be 'sampled' or 'mean', not {durations!r}")
    capacity = parse_size_mb(memory_capacity, default_unit="mib") if memory_capacity else None
    if capacity is not None and capacity <= 0:
        raise ConfigError("--memory-capacity must be positive")
    workload = load_workload(trace)
    comparison = compare_policies(
        workload,
        policy or PAPER_POLICY_SET,
        seed=seed,
        durations="mean" if durations == "mean" else "sampled",
        capacity_mb=capacity,
        cold_start_s=parse_duration(cold_start),
        repeat=repeat,
        warmup_s=duration_option(warmup, "--warmup") if warmup is not None else 0.0,
        count_rules=rules,
        show_progress=False if json_output else None,
    )
    if plot is not None:
        figure = tradeoff_figure(comparison)
        figure.savefig(plot, dpi=120)
    if json_output:
        print_json([row.to_json() for row in comparison.rows])
        return
    print_keepalive_table(comparison)
    if comparison.rules:
        _print_rules_table(comparison)
    for note in workload.notes:
        console.print(f"note: {note}", style="dim")
    if plot is not None:
        console.print(f"trade-off plot written to {plot}")


faas_live.register(app)
faas_live.register_replay(app)
faas_bench.register(app)
faas_density.register(app)
faas_cache_bench.register(app)
app.add_typer(faas_cache.app, name="cache")
