"""``strato data``: which named data sets are found where."""

from __future__ import annotations

from typing import Annotated

import typer

from strato.cli.common import friendly_errors, print_json
from strato.core.console import console, print_table
from strato.traces.datasets import find_data_root, survey

app = typer.Typer(help="The data folder and the named data sets in it.", no_args_is_help=True)


@app.command("list")
@friendly_errors
def list_sets(
    json_output: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON")] = False,
) -> None:
    """Show every named data set (the names --trace and --data accept) and whether it is found."""
    root = find_data_root()
    members = survey(root)
    if json_output:
        print_json(
            {
                "root": None if root is None else str(root.path),
                "source": None if root is None else root.source,
                "sets": [member.to_json() for member in members],
            }
        )
        return
    if root is None:
        console.print(
            "no data folder: set STRATO_DATA, or run from a checkout with ../shared/data beside it",
            highlight=False,
        )
    else:
        console.print(f"data folder: {root.path} (from {root.source})", highlight=False)
    print_table(
        [
            {"spec": m.spec, "domain": m.domain, "found": "yes" if m.found else "no", "path": m.path}
            for m in members
        ],
        [("spec", "named set"), ("domain", "domain"), ("found", "found"), ("path", "path")],
    )
