"""``strato faas density``: memory per idle warm instance (PSS) and instances per GiB, per spawn mode."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console, print_table

if TYPE_CHECKING:
    from strato.faas.live.density import DensityOptions, DensityReport, DensityResult, Memory


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f} MiB"


def _part(memory: Memory | None) -> str:
    if memory is None:
        return "-"
    count = f" ({memory.processes})" if memory.processes > 1 else ""
    return f"{memory.pss_mib:,.2f} MiB{count}"


Cell = tuple[str, float | None]
"""What a table cell shows, and the number a fork/fresh ratio is taken of (None: no ratio)."""


def _rows(report: DensityReport) -> list[tuple[str, dict[str, Cell]]]:
    """(metric, {spawn: cell}) in table order."""

    def each(cell: Callable[[DensityResult], Cell]) -> dict[str, Cell]:
        return {result.spawn: cell(result) for result in report.results}

    def pss(result: DensityResult) -> Cell:
        return _mib(result.median_pss_mib), result.median_pss_mib

    return [
        ("idle instances measured", each(lambda r: (f"{len(r.instances)} / {r.requested}", None))),
        ("processes per instance", each(lambda r: (f"{r.processes_per_instance:g}", None))),
        ("PSS per instance, median", each(pss)),
        (
            "  of which the sandbox's waiter, median",
            each(lambda r: (_mib(r.median_waiter_pss_mib), r.median_waiter_pss_mib)),
        ),
        ("PSS per instance, max", each(lambda r: (_mib(r.max_pss_mib), r.max_pss_mib))),
        ("instances per GiB (1024 / median PSS)", each(lambda r: (f"{r.instances_per_gib:,.0f}", None))),
        ("PSS total / N (marginal)", each(lambda r: (_mib(r.marginal_pss_mib), r.marginal_pss_mib))),
        ("USS per instance, median", each(lambda r: (_mib(r.median_uss_mib), r.median_uss_mib))),
        ("RSS per instance, median", each(lambda r: (_mib(r.median_rss_mib), r.median_rss_mib))),
        ("memory cgroup usage, median", each(lambda r: (_mib(r.median_cgroup_mib), r.median_cgroup_mib))),
        ("fixed: gateway PSS", each(lambda r: (_part(r.overhead.gateway), None))),
        ("fixed: fork-server template PSS", each(lambda r: (_part(r.overhead.template), None))),
        ("fixed: zygotes PSS (count)", each(lambda r: (_part(r.overhead.zygotes), None))),
        (
            "(fixed + total PSS) / N (amortised)",
            each(lambda r: (_mib(r.amortised_pss_mib), r.amortised_pss_mib)),
        ),
        ("bring-up (hold rounds)", each(lambda r: (f"{r.bring_up_s:.1f} s ({r.hold_rounds})", None))),
    ]


def print_report(report: DensityReport) -> None:
    """One row per measure, one column per spawn mode (and fork/fresh when both ran), then warnings."""
    spawns = [result.spawn for result in report.results]
    both = {"fork", "fresh"} <= set(spawns)
    rows: list[dict[str, Any]] = []
    for metric, cells in _rows(report):
        row: dict[str, Any] = {"metric": metric, **{spawn: cells[spawn][0] for spawn in spawns}}
        if both:
            fork, fresh = cells["fork"][1], cells["fresh"][1]
            row["ratio"] = f"{fork / fresh:.2f}" if fork is not None and fresh else "-"
        rows.append(row)
    columns = [("metric", "idle warm instance"), *((spawn, spawn) for spawn in spawns)]
    if both:
        columns.append(("ratio", "fork/fresh"))
    options = report.options
    machine = report.machine
    print_table(
        rows,
        columns,
        title=(
            f"density: {options.instances} idle echo instances per spawn mode, lean backend, sandbox "
            f"{'on' if options.sandbox else 'off'} ({machine.get('cpus_usable')} CPUs, "
            f"Python {machine.get('python')})"
        ),
    )
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"elapsed {report.elapsed_s:.0f} s", highlight=False)


def _progress(line: str) -> None:
    print(f"density {line}", file=sys.stderr, flush=True)


def build_options(*, instances: int, spawn: str, sandbox: bool) -> DensityOptions:
    from strato.faas.live.density import DensityOptions, check_instances, parse_spawns

    return DensityOptions(instances=check_instances(instances), spawns=parse_spawns(spawn), sandbox=sandbox)


def register(app: typer.Typer) -> None:
    @app.command()
    @friendly_errors
    def density(
        instances: Annotated[int, typer.Option(help="Idle warm instances per spawn mode (1-256)")] = 20,
        spawn: Annotated[str, typer.Option(help="fork, fresh or both")] = "both",
        sandbox: Annotated[
            bool, typer.Option(help="Isolate instances (namespaces, cgroups, own uid) where the host allows")
        ] = True,
        json_output: Annotated[bool, typer.Option("--json", help="Print the full report as JSON")] = False,
    ) -> None:
        """Memory per idle warm instance (PSS from /proc/PID/smaps_rollup) and instances per GiB.

        Starts a real server per spawn mode (lean backend, never-unload), brings up N instances of an echo
        function with N concurrent invocations, waits until they are idle and reads the memory of every
        process of each instance; also USS, RSS, the instance's cgroup usage and the server's own PSS.
        """
        from strato.faas.live.density import run_density

        options = build_options(instances=instances, spawn=spawn, sandbox=sandbox)
        report = run_density(options, progress=_progress)
        if json_output:
            print_json(report.to_json())
        else:
            print_report(report)
