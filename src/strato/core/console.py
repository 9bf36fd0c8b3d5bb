"""Terminal output shared by the library's front ends (the CLI, the demo, benchmarks): consoles and tables."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from rich.console import Console
from rich.table import Table

# Piped output has no terminal width; rich would squeeze tables into 80 columns and cut numbers.
console = Console(width=None if sys.stdout.isatty() else 160)
error_console = Console(stderr=True)


def format_cell(value: object, spec: str | None = None) -> str:
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
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[tuple[str, str]],
    *,
    title: str | None = None,
    formats: Mapping[str, str] | None = None,
) -> None:
    """``columns`` pairs a row key with its header."""
    formats = formats or {}
    table = Table(title=title)
    for key, header in columns:
        table.add_column(header, justify="left" if key == "policy" else "right")
    for row in rows:
        table.add_row(*(format_cell(row.get(key), formats.get(key)) for key, _ in columns))
    console.print(table)
