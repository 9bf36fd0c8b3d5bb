"""``strato monitor publish-llm``: a simulated LLM inference cluster, live in Ganglia.

The ``monitor`` typer app lives elsewhere; it calls :func:`register` to add this command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console, error_console
from strato.errors import ConfigError
from strato.monitor.llm_feed_defaults import (
    DEFAULT_ARRIVALS_S,
    DEFAULT_DESIGN,
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DEFAULT_RATE_RPS,
    DEFAULT_TOKEN,
    DEFAULT_TRACE,
)

if TYPE_CHECKING:
    from strato.monitor.publish_llm import Tick


def register(app: typer.Typer) -> None:
    """Add ``publish-llm`` to ``app`` (the ``strato monitor`` group)."""
    app.command("publish-llm")(publish_llm)


def _tick_line(tick: Tick) -> str:
    machines = " ".join(
        f"{s.name.rpartition('-')[2]}:{s.role[0]}{'*' if s.busy else ''}"
        f" q{s.queued_prompts} d{s.decoding} kv{s.kv_util:.2f}"
        for s in tick.samples
    )
    moved = f"  moved {','.join(tick.role_changes)}" if tick.role_changes else ""
    return f"{tick.index:5d} wall {tick.wall_s:7.1f}s sim {tick.sim_s:8.1f}s  {machines}{moved}"


@friendly_errors
def publish_llm(
    gmond: Annotated[
        str, typer.Option(help="The gmond's UDP receive channel (host:port) to send the metrics to")
    ] = "127.0.0.1:8649",
    design: Annotated[
        str, typer.Option(help="baseline-a100, baseline-h100, splitwise-aa|hh|ha|hhcap")
    ] = DEFAULT_DESIGN,
    prompt: Annotated[int, typer.Option(help="Prompt machines (splitwise designs)")] = DEFAULT_PROMPT,
    token: Annotated[int, typer.Option(help="Token machines (splitwise designs)")] = DEFAULT_TOKEN,
    machines: Annotated[
        int | None, typer.Option(help="Machines (baseline designs; default --prompt + --token)")
    ] = None,
    model: Annotated[str, typer.Option(help="Model from the catalog")] = DEFAULT_MODEL,
    trace: Annotated[
        str,
        typer.Option(help="Token sizes from: synthetic[:kind=code|conv], azure-llm-2023:code|conv, a CSV"),
    ] = DEFAULT_TRACE,
    rate: Annotated[
        float,
        typer.Option(help="Poisson arrivals at this rate (req/s), token sizes resampled; 0: the trace's own"),
    ] = DEFAULT_RATE_RPS,
    sim_duration: Annotated[
        float, typer.Option(help="Simulated seconds of arrivals (the cluster then drains)")
    ] = DEFAULT_ARRIVALS_S,
    perf: Annotated[
        str | None, typer.Option(help="analytic (default), profile, or a profile CSV path")
    ] = None,
    speed: Annotated[float, typer.Option(help="Simulated seconds per wall-clock second")] = 1.0,
    interval: Annotated[float, typer.Option(help="Wall seconds between two sends of every metric")] = 1.0,
    duration: Annotated[
        float | None, typer.Option(help="Wall seconds to run (default: until the simulation ends)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the arrivals")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print one line per tick")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON at the end")] = False,
) -> None:
    """Run a cluster simulation in (scaled) real time and publish every simulated machine to Ganglia as
    a host of its own (group llm: role, queues, KV use, busy), so monitoring can follow machines as
    Splitwise's mixed pool borrows them."""
    from strato.monitor.gmetric import GmetricSender, parse_address
    from strato.monitor.publish_llm import LlmClusterFeed, publish

    # Bad options fail before the simulation is built and the banner printed.
    address = parse_address(gmond)
    if not speed > 0 or not interval > 0 or (duration is not None and not duration >= 0):
        raise ConfigError("--speed and --interval must be positive and --duration zero or more")
    feed = LlmClusterFeed(
        design,
        prompt=prompt,
        token=token,
        machines=machines,
        model=model,
        trace=trace,
        rate_rps=rate if rate > 0 else None,
        duration_s=sim_duration,
        seed=seed,
        perf=perf,
    )
    # With --json, stdout carries only the JSON document; tick lines go to stderr.
    out = error_console if json_output else console

    def show(tick: Tick) -> None:
        out.print(_tick_line(tick), highlight=False, markup=False, soft_wrap=True)

    if not json_output:
        console.print(
            f"publishing {feed.design.label()} ({len(feed.names)} hosts, {len(feed.requests):,} requests "
            f"of {feed.requests.name}) to gmond {gmond} at {speed:g}x, every {interval:g} s",
            highlight=False,
        )
    try:
        with GmetricSender(address) as sender:
            summary = publish(
                feed,
                sender,
                speed=speed,
                interval_s=interval,
                duration_s=duration,
                on_tick=show if verbose else None,
            )
    except OSError as error:  # an unresolvable host, no route: say so in one line
        raise ConfigError(f"cannot send to gmond at {gmond}: {error.strerror or error}") from None
    if json_output:
        print_json(
            {**feed.describe(), "gmond": gmond, "speed": speed, "interval_s": interval, **summary.to_json()}
        )
        return
    changes = ", ".join(f"{name} {count}" for name, count in summary.role_changes.items() if count)
    ending = (
        "simulation finished" if summary.finished else "interrupted" if summary.interrupted else "stopped"
    )
    console.print(
        f"{summary.ticks} ticks in {summary.wall_s:.1f} s wall, {summary.sim_s:.1f} s simulated ({ending}); "
        f"role changes: {changes or 'none'}",
        highlight=False,
    )
