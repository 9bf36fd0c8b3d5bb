"""Helpers every CLI domain uses: clean errors, JSON output and tables."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from strato.errors import StratoError

P = ParamSpec("P")
R = TypeVar("R")
# Piped output has no terminal width; rich would squeeze tables into 80 columns and cut numbers.
console = Console(width=None if sys.stdout.isatty() else 160)
error_console = Console(stderr=True)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print strato's own errors as one line and exit with status 2 instead of a traceback."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except StratoError as error:
            # soft_wrap: one line however long, so scripts and logs can grep it.
            error_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=_jsonable)
    sys.stdout.write("\n")


def format_cell(value: Any, spec: str | None = None) -> str:
    if value is None:
        return "-"
    if spec is not None and isinstance(value, int | float):
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    title: str | None = None,
    formats: dict[str, str] | None = None,
) -> None:
    """``columns`` pairs a row key with its header."""
    formats = formats or {}
    table = Table(title=title)
    for key, header in columns:
        table.add_column(header, justify="left" if key == "policy" else "right")
    for row in rows:
        table.add_row(*(format_cell(row.get(key), formats.get(key)) for key, _ in columns))
    console.print(table)
