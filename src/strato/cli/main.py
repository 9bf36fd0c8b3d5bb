"""Entry point of the ``strato`` console script."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from strato import __version__
from strato.cli import data, faas, llm, monitor, power, storage, traces, vm
from strato.cli.common import friendly_errors

app = typer.Typer(
    help="strato: run and evaluate cloud resource-management policies, live and on real traces.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(traces.app, name="traces")
app.add_typer(faas.app, name="faas")
app.add_typer(llm.app, name="llm")
app.add_typer(monitor.app, name="monitor")
app.add_typer(vm.app, name="vm")
app.add_typer(power.app, name="power")
app.add_typer(data.app, name="data")
app.add_typer(storage.app, name="storage")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"strato {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit")
    ] = False,
) -> None:
    """strato: run and evaluate cloud resource-management policies, live and on real traces."""


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option(help="Directory for the HTML report and its PNG figures")] = Path(
        "strato-report"
    ),
    apps: Annotated[int, typer.Option(help="Applications in the embedded synthetic workload")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic workload")] = 0,
) -> None:
    """Run every domain's main job on embedded synthetic defaults and write one report."""
    from strato.demo import run_demo

    run_demo(out, apps=apps, seed=seed)
