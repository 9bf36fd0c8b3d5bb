"""Keep-alive policies: small decision objects shared by the simulators and the live platform.

Specs name a policy and its parameters, e.g. ``fixed:10m``, ``hybrid:range=2h,cv=2``, ``greedy-dual``.
New policies plug in with :func:`register_policy`.
"""

from __future__ import annotations

from collections.abc import Callable

from strato.core.registry import Registry
from strato.core.specs import split_spec
from strato.core.units import parse_duration
from strato.errors import ConfigError
from strato.faas.policies.base import NEVER, AppInfo, KeepAlivePolicy, Window
from strato.faas.policies.fixed import FixedKeepAlive, NeverUnload
from strato.faas.policies.greedy_dual import GreedyDual
from strato.faas.policies.hybrid import HybridHistogram

PolicyFactory = Callable[[str | None, dict[str, str]], KeepAlivePolicy]
POLICIES: Registry[PolicyFactory] = Registry("policy")
"""Policy name -> ``factory(positional, params)``; new policies plug in with :func:`register_policy`."""

PAPER_POLICY_SET: tuple[str, ...] = (
    "never-unload",
    *(f"fixed:{minutes}m" for minutes in (5, 10, 20, 30, 45, 60, 90, 120)),
    *(f"hybrid:range={hours}h" for hours in (1, 2, 3, 4)),
)
"""The policies of the paper's trade-off figure, run when no --policy is given."""


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make ``name[:arg][,k=v...]`` specs build policies with ``factory(arg, params)``."""
    POLICIES.register(name, factory)


def parse_policy(spec: str) -> KeepAlivePolicy:
    """Build a policy from a spec such as ``fixed:10m``, ``hybrid:range=2h,head=5`` or ``never-unload``."""
    parts = split_spec(spec, what="policy")
    return POLICIES.get(parts.head)(parts.positional, dict(parts.params))


def _no_params(name: str, positional: str | None, params: dict[str, str]) -> None:
    if positional or params:
        raise ConfigError(f"policy {name!r} takes no parameters")


def _fixed(positional: str | None, params: dict[str, str]) -> KeepAlivePolicy:
    value = params.pop("keepalive", positional)
    if value is None or params:
        raise ConfigError("fixed keep-alive needs exactly one duration, e.g. fixed:10m or fixed:2h")
    return FixedKeepAlive(parse_duration(value, default_unit="m"))


def _never_unload(positional: str | None, params: dict[str, str]) -> KeepAlivePolicy:
    _no_params("never-unload", positional, params)
    return NeverUnload()


def _greedy_dual(positional: str | None, params: dict[str, str]) -> KeepAlivePolicy:
    _no_params("greedy-dual", positional, params)
    return GreedyDual()


_HYBRID_PARAMS: dict[str, tuple[str, Callable[[str], object]]] = {
    "range": ("range_s", lambda v: parse_duration(v, default_unit="h")),
    "bin": ("bin_s", lambda v: parse_duration(v, default_unit="m")),
    "head": ("head_pct", float),
    "tail": ("tail_pct", float),
    "head-margin": ("head_margin", float),
    "tail-margin": ("tail_margin", float),
    "cv": ("cv_threshold", float),
    "oob": ("oob_threshold", float),
    "min-samples": ("min_samples", int),
    "arima-margin": ("arima_margin", float),
    "arima-history": ("arima_history", int),
}


def _arima_order(text: str) -> tuple[int, int, int]:
    parts = text.replace("-", " ").replace("/", " ").split()
    if len(parts) != 3:
        raise ConfigError(f"ARIMA order must be p-d-q such as 1-0-0 (or 'off'), got {text!r}")
    p, d, q = (int(x) for x in parts)
    return p, d, q


def _hybrid(positional: str | None, params: dict[str, str]) -> KeepAlivePolicy:
    if positional is not None:
        params.setdefault("range", positional)
    kwargs: dict[str, object] = {}
    for key, value in params.items():
        if key == "arima":
            if value.lower() in ("off", "none", "no"):
                kwargs["use_arima"] = False
            else:
                kwargs["arima_order"] = _arima_order(value)
            continue
        if key not in _HYBRID_PARAMS:
            known = ", ".join([*_HYBRID_PARAMS, "arima"])
            raise ConfigError(f"unknown hybrid parameter {key!r} (known: {known})")
        attribute, convert = _HYBRID_PARAMS[key]
        try:
            kwargs[attribute] = convert(value)
        except ValueError as error:
            raise ConfigError(f"hybrid parameter {key}={value!r} is not valid: {error}") from None
    return HybridHistogram(**kwargs)  # type: ignore[arg-type]


register_policy("fixed", _fixed)
register_policy("never-unload", _never_unload)
register_policy("greedy-dual", _greedy_dual)
register_policy("hybrid", _hybrid)

__all__ = [
    "NEVER",
    "PAPER_POLICY_SET",
    "POLICIES",
    "AppInfo",
    "FixedKeepAlive",
    "GreedyDual",
    "HybridHistogram",
    "KeepAlivePolicy",
    "Window",
    "parse_policy",
    "register_policy",
]
