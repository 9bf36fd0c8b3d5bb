"""Specifications and configuration files, parsed the same way in every domain.

One grammar names every plug-in and every workload: ``head[:item,item,...]`` where each item is either
``key=value`` or, at most once, a bare value (the positional argument). Policies (``fixed:10m``,
``hybrid:range=2h,tail=95``), routers, generator specs (``synthetic:apps=50,seed=2``) and named data sets
(``azure-functions-2019:sampled/1350``) are all split by :func:`split_spec`; what the head and the items
mean is up to the caller. TOML files with known top-level keys are read by :func:`read_toml`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strato.errors import ConfigError

Keys = Mapping[str, tuple[str, type[int] | type[float]]]


@dataclass(frozen=True)
class Spec:
    """``head[:positional][,key=value...]`` split into its parts (``params`` keeps the written order)."""

    text: str
    head: str
    positional: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_items(self) -> bool:
        return self.positional is not None or bool(self.params)


def split_spec(text: str, *, what: str = "spec") -> Spec:
    """Split ``head[:item,...]``; ``what`` names the spec's role in errors ("policy", "--trace", ...).

    Raises :class:`ConfigError` for an empty head, nothing after ``:``, an empty item, a key without a
    value, a key given twice, or a second positional value.
    """
    stripped = text.strip()
    head, sep, rest = (part.strip() for part in stripped.partition(":"))
    if not head:
        raise ConfigError(f"{what} {text!r}: empty name (expected name[:value][,key=value...])")
    if sep and not rest:
        raise ConfigError(f"{what} {text!r}: nothing after ':' (expected a value or key=value,...)")
    positional: str | None = None
    params: dict[str, str] = {}
    for item in rest.split(",") if sep else ():
        key, eq, value = (part.strip() for part in item.partition("="))
        if not key:
            raise ConfigError(f"{what} {text!r}: empty item (expected key=value,...)")
        if not eq:
            if positional is not None:
                raise ConfigError(f"{what} {text!r} has more than one positional argument")
            positional = key
            continue
        if not value:
            raise ConfigError(f"{what} {text!r}: key {key!r} needs a value ({key}=...)")
        if key in params:
            raise ConfigError(f"{what} {text!r}: key {key!r} is given twice")
        params[key] = value
    return Spec(stripped, head, positional, params)


def parse_synthetic_spec(text: str, keys: Keys, *, what: str = "synthetic") -> dict[str, int | float]:
    """``synthetic`` or ``synthetic:key=value,...`` -> {field: value}; ``keys`` maps each spec key to the
    field it sets and its type. Raises :class:`ConfigError` naming the offending key."""
    spec = split_spec(text, what="synthetic spec")
    if spec.head != "synthetic":
        raise ConfigError(f"a {what} spec starts with 'synthetic', got {text!r}")
    if spec.positional is not None:
        raise ConfigError(
            f"synthetic spec {text!r}: {spec.positional!r} is not key=value (known keys: {', '.join(keys)})"
        )
    values: dict[str, int | float] = {}
    for key, raw in spec.params.items():
        if key not in keys:
            raise ConfigError(f"synthetic spec: unknown key {key!r} (known keys: {', '.join(keys)})")
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
