"""Helpers every CLI domain uses: clean errors, JSON output and tables."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer

from strato.core.console import error_console
from strato.core.units import parse_duration
from strato.errors import ConfigError, StratoError

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
            raise typer.Exit(code=error.exit_code) from None

    return wrapper


def duration_option(text: str, option: str) -> float:
    """Seconds for an option's ``text``, which must name its unit: a bare 16 could mean minutes or hours."""
    try:
        float(text)
    except ValueError:
        return parse_duration(text)
    raise ConfigError(f"{option} needs a unit, e.g. 16h or 90m (got {text!r})")


def power_option(text: str, option: str) -> float:
    """Watts for an option's ``text``, which must name its unit: ``W``, ``kW`` or ``MW`` (megawatts; the
    ``w`` and the ``k`` in either case). A bare number is refused (a row's budget in W and in kW look
    alike), and so is ``mW``: NVML counts milliwatts, people write ``mw`` for megawatts."""
    try:
        float(text)
    except ValueError:
        pass
    else:
        raise ConfigError(f"{option} needs a power with its unit, e.g. 260kW (got {text!r})")
    stripped = text.strip()
    cut = len(stripped)
    while cut and stripped[cut - 1].isalpha():
        cut -= 1
    number, unit = stripped[:cut].strip(), stripped[cut:]
    if unit in ("mW", "mw"):
        raise ConfigError(f"{option}: {unit!r} is ambiguous (milliwatts or megawatts?): write W, kW or MW")
    factor = {"w": 1.0, "kw": 1e3}.get(unit.lower(), 1e6 if unit in ("MW", "Mw") else None)
    try:
        watts = float(number) * factor if factor is not None else math.nan
    except ValueError:
        watts = math.nan
    if math.isnan(watts):
        raise ConfigError(f"{option}: {text!r} is not a power such as 260kW, 2400W or 1.5MW")
    if not 0 < watts < math.inf:
        raise ConfigError(f"{option}: a power must be positive and finite, got {text!r}")
    return watts


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def _finite(value: Any) -> Any:
    """NaN and infinities as null: json.dump writes them as NaN/Infinity, which is not JSON, and never
    hands floats to ``default``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def print_json(data: Any) -> None:
    json.dump(_finite(data), sys.stdout, indent=2, default=lambda value: _finite(_jsonable(value)))
    sys.stdout.write("\n")
