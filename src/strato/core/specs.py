"""``synthetic:key=value,...`` specifications, parsed the same way for every domain's generator."""

from __future__ import annotations

from collections.abc import Mapping

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
