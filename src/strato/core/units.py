"""Parsing of human-written durations and sizes ("10m", "2h", "512MB", "4GiB")."""

from __future__ import annotations

import re

from strato.errors import ConfigError

_DURATION_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_SIZE_UNITS = {
    "b": 1 / 2**20,
    "kb": 1e3 / 2**20,
    "kib": 1 / 2**10,
    "ki": 1 / 2**10,
    "mb": 1e6 / 2**20,
    "mib": 1.0,
    "mi": 1.0,
    "gb": 1e9 / 2**20,
    "gib": 2**10,
    "gi": 2**10,
    "tb": 1e12 / 2**20,
    "tib": 2**20,
}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(text: str, *, default_unit: str = "s") -> float:
    """Return seconds for ``text`` such as ``"90s"``, ``"10m"``, ``"2h"``, ``"1.5d"``.

    A bare number takes ``default_unit``. Negative or unknown units raise :class:`ConfigError`.
    """
    match = _NUMBER_WITH_UNIT.match(str(text))
    if not match:
        raise ConfigError(f"cannot read {text!r} as a duration (examples: 90s, 10m, 2h)")
    value, unit = float(match.group(1)), (match.group(2) or default_unit).lower()
    if unit not in _DURATION_UNITS:
        known = ", ".join(sorted(_DURATION_UNITS))
        raise ConfigError(f"unknown duration unit {unit!r} in {text!r} (known: {known})")
    return value * _DURATION_UNITS[unit]


def parse_size_mb(text: str, *, default_unit: str = "mb") -> float:
    """Return MiB for ``text`` such as ``"512MB"``, ``"4GiB"``, ``"1.5GB"``.

    We keep memory in MiB everywhere because the Azure traces report "AllocatedMb" in MiB. Kubernetes-style
    suffixes (``128Mi``, ``1Gi``), as OpenFaaS limits use them, are binary units too.
    Decimal units (MB, GB) are converted exactly, so "1GB" is 953.67 MiB.
    """
    match = _NUMBER_WITH_UNIT.match(str(text))
    if not match:
        raise ConfigError(f"cannot read {text!r} as a memory size (examples: 512MiB, 4GiB, 64GB)")
    value, unit = float(match.group(1)), (match.group(2) or default_unit).lower()
    if unit not in _SIZE_UNITS:
        known = ", ".join(sorted(_SIZE_UNITS))
        raise ConfigError(f"unknown size unit {unit!r} in {text!r} (known: {known})")
    return value * _SIZE_UNITS[unit]


def format_duration(seconds: float) -> str:
    """Shortest exact spelling of a duration for labels: 600 -> "10m", 7200 -> "2h"."""
    for unit, scale in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= scale and float(seconds / scale).is_integer():
            return f"{int(seconds / scale)}{unit}"
    return f"{seconds:g}s"
