"""``strato traces``: synthesise and characterise workloads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console
from strato.traces.faas.loader import load_workload

app = typer.Typer(help="Read, describe and synthesise FaaS traces.", no_args_is_help=True)


@app.command()
@friendly_errors
def describe(
    path: Annotated[str, typer.Argument(help="Trace directory/file, or synthetic[:k=v,...]")],
    seed: Annotated[int, typer.Option(help="Seed for spreading minute counts")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
) -> None:
    """Print the characterisation statistics of a trace next to the paper's figures."""
    from strato.traces.faas.describe import describe as characterise
    from strato.traces.faas.describe import format_characterisation

    workload = load_workload(path)
    result = characterise(workload, seed=seed)
    if json_output:
        print_json(result.to_dict())
        return
    console.print(format_characterisation(result), highlight=False)
    for note in workload.notes:
        console.print(f"note: {note}", style="dim")


@app.command()
@friendly_errors
def idle(
    paths: Annotated[
        list[str],
        typer.Argument(help="Traces to set side by side (directories/files or synthetic[:k=v,...])"),
    ],
    seed: Annotated[int, typer.Option(help="Seed for spreading minute counts and sampling durations")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
) -> None:
    """Per-app idle-time structure (CV, p5, p99, timer-like apps) of traces, side by side."""
    from strato.traces.faas.describe import format_idle_structures, idle_structure

    structures = [idle_structure(load_workload(path), seed=seed) for path in paths]
    if json_output:
        print_json([structure.to_dict() for structure in structures])
        return
    console.print(format_idle_structures(structures), highlight=False)


@app.command()
@friendly_errors
def synth(
    out: Annotated[Path, typer.Argument(help="Directory for invocations.csv, durations.csv, memory.csv")],
    apps: Annotated[int, typer.Option(help="Number of applications")] = 500,
    minutes: Annotated[int, typer.Option(help="Length of the trace in minutes")] = 1440,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Any other generator knob as key=value (repeatable)")
    ] = None,
) -> None:
    """Generate an Azure-like workload in the Azure 2019 format."""
    from strato.traces.faas.azure2019 import write_azure2019

    spec = ",".join([f"apps={apps}", f"minutes={minutes}", f"seed={seed}", *(param or [])])
    workload = load_workload(f"synthetic:{spec}")
    write_azure2019(workload, out)
    console.print(
        f"wrote {workload.n_apps} apps, {workload.n_functions} functions, "
        f"{int(workload.invocation_counts().sum()):,} invocations to {out}"
    )
