"""Helpers every CLI domain uses: clean errors, JSON output and tables."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer

from strato.core.console import console, error_console, print_table
from strato.errors import ConflictError, NotFoundError, StratoError, UnavailableError

# Every command prints through the library's consoles and tables (strato.core.console).
__all__ = ["console", "error_console", "friendly_errors", "print_json", "print_table"]

P = ParamSpec("P")
R = TypeVar("R")


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Print strato's own errors as one line and exit with the status of their kind instead of a
    traceback: 3 not found, 4 conflict, 5 unavailable, 2 bad input or any other (strato.errors)."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except StratoError as error:
            # soft_wrap: one line however long, so scripts and logs can grep it.
            error_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
            if isinstance(error, NotFoundError):
                code = 3
            elif isinstance(error, ConflictError):
                code = 4
            elif isinstance(error, UnavailableError):
                code = 5
            else:
                code = 2
            raise typer.Exit(code=code) from None

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
