"""Specifications and configuration files, parsed the same way in every domain: ``synthetic:key=value,...``
specs for the generators and TOML files with known top-level keys."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from strato.errors import ConfigError

Keys = Mapping[str, tuple[str, type[int] | type[float]]]


def parse_synthetic_spec(text: str, keys: Keys, *, what: str = "synthetic") -> dict[str, int | float]:
    """``synthetic`` or ``synthetic:key=value,...`` -> {field: value}; ``keys`` maps each spec key to the
    field it sets and its type. Raises :class:`ConfigError` naming the offending key."""
    head, sep, body = text.strip().partition(":")
    if head.strip() != "synthetic":
        raise ConfigError(f"a {what} spec starts with 'synthetic', got {text!r}")
    if sep and not body.strip():
        raise ConfigError(f"synthetic spec {text!r}: nothing after ':' (expected key=value,...)")
    values: dict[str, int | float] = {}
    for item in body.split(",") if sep else ():
        key, eq, raw = (part.strip() for part in item.partition("="))
        if not key:
            raise ConfigError(f"synthetic spec {text!r}: empty item (expected key=value,...)")
        if key not in keys:
            raise ConfigError(f"synthetic spec: unknown key {key!r} (known keys: {', '.join(keys)})")
        if not eq or not raw:
            raise ConfigError(f"synthetic spec: key {key!r} needs a value ({key}=...)")
        field_name, kind = keys[key]
        if field_name in values:
            raise ConfigError(f"synthetic spec: key {key!r} is given twice")
        try:
            values[field_name] = kind(raw)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise ConfigError(f"synthetic spec: {key} must be {expected}, got {raw!r}") from None
    return values


def read_toml(path: Path, *, what: str, known: Iterable[str], entries: str) -> dict[str, Any]:
    """A TOML file's top level, with one-line errors for an unreadable file, bad TOML and keys not in
    ``known`` (``what`` names the file's role, ``entries`` its top-level keys in messages)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what}: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    allowed = set(known)
    if unknown := sorted(set(data) - allowed):
        raise ConfigError(
            f"{path}: unknown {entries} {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )
    return data
