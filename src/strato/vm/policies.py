"""Oversubscription policies: small, pure decision objects over a batch of node histories.

A policy sees, for every node-window to decide, only the past (:class:`DecisionInputs`) and answers one
ratio per node-window. The field's static heuristics (Google's "peak oracle" study, EuroSys 2021, and
Borg/Resource Central practice) are here; the learned ProtoHAIL policy is in :mod:`strato.vm.protohail`.
Each heuristic predicts the node's peak utilisation ``p`` and sells the largest ratio with ``r p <= 1``.

Specs (``parse_policy``): ``fixed:1.2``, ``nsigma:n=3``, ``percentile:p=99``, ``borg:f=0.9``,
``max:n=3,p=99`` (the larger of the N-sigma and percentile predictions), ``oracle`` (hindsight, the upper
bound, not deployable), ``protohail[:k=12,safety=0.1]`` or ``protohail:model=PATH``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from strato.core.registry import Registry
from strato.core.specs import Spec, split_spec
from strato.errors import ConfigError
from strato.vm.env import snap_down


@dataclass
class DecisionInputs:
    """What a policy may know when it decides a batch of node-windows."""

    history_max: np.ndarray
    """(n, history slots) node utilisation from max readings, oldest first; NaN before the data begins."""
    history_avg: np.ndarray
    vm_peak: Callable[[float], np.ndarray]
    """``vm_peak(p)``: per node-window, the vCPU-weighted sum of each VM's p-th percentile over the
    history, as a fraction of the node's vCPUs (Resource Central's per-VM prediction)."""
    classes: list[list[str]]
    """The classes of each node-window's VMs (human rules cap ratios per class)."""
    ratios: tuple[float, ...]
    slots_per_day: int
    future_max: np.ndarray | None = None
    """Only the hindsight oracle gets the future; evaluation and training hand it over explicitly."""
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.history_max.shape[0])


class Policy(ABC):
    name: str = "policy"
    parameter: str | None = None
    """The knob a frontier sweeps (None: a single point)."""

    @abstractmethod
    def decide(self, inputs: DecisionInputs) -> np.ndarray:
        """One ratio per node-window, from ``inputs.ratios``."""

    def sweep(self) -> list[Policy]:
        """Variants along this policy's risk/benefit knob, for frontier plots."""
        return [self]


def _from_peak(peak: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        limit = np.where(np.isfinite(peak) & (peak > 0), 1.0 / peak, ratios[-1])
    return snap_down(np.minimum(limit, ratios[-1]), ratios)


@dataclass
class FixedRatio(Policy):
    ratio: float = 1.2
    parameter = "ratio"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"fixed:{self.ratio:g}"

    def decide(self, inputs: DecisionInputs) -> np.ndarray:
        return np.full(inputs.count, snap_down(np.array([self.ratio]), inputs.ratios)[0])

    def sweep(self) -> list[Policy]:
        return [FixedRatio(r) for r in (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)]


@dataclass
class NSigma(Policy):
    n: float = 3.0
    parameter = "n"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"nsigma:n={self.n:g}"

    def decide(self, inputs: DecisionInputs) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            peak = np.nanmean(inputs.history_max, axis=1) + self.n * np.nanstd(inputs.history_max, axis=1)
        return _from_peak(peak, inputs.ratios)

    def sweep(self) -> list[Policy]:
        return [NSigma(n) for n in (1, 2, 3, 4, 5, 6, 8, 10)]


@dataclass
class PercentileSum(Policy):
    p: float = 99.0
    parameter = "p"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"percentile:p={self.p:g}"

    def decide(self, inputs: DecisionInputs) -> np.ndarray:
        return _from_peak(inputs.vm_peak(self.p), inputs.ratios)

    def sweep(self) -> list[Policy]:
        return [PercentileSum(p) for p in (80, 90, 95, 98, 99, 99.5, 99.9, 100)]


@dataclass
class BorgFraction(Policy):
    """Borg's default: assume usage is a fixed fraction of the limits, whatever was observed."""

    f: float = 0.9
    parameter = "f"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"borg:f={self.f:g}"

    def decide(self, inputs: DecisionInputs) -> np.ndarray:
        return _from_peak(np.full(inputs.count, self.f), inputs.ratios)

    def sweep(self) -> list[Policy]:
        return [BorgFraction(f) for f in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)]


@dataclass
class MaxOfTwo(Policy):
    """The larger (safer) of the N-sigma and per-VM percentile predictions."""

    n: float = 3.0
    p: float = 99.0
    parameter = "n,p"

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"max:n={self.n:g},p={self.p:g}"

    def decide(self, inputs: DecisionInputs) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            sigma = np.nanmean(inputs.history_max, axis=1) + self.n * np.nanstd(inputs.history_max, axis=1)
        return _from_peak(np.fmax(sigma, inputs.vm_peak(self.p)), inputs.ratios)

    def sweep(self) -> list[Policy]:
        return [
            MaxOfTwo(n, p) for n, p in ((1, 90), (2, 95), (3, 98), (3, 99), (4, 99.5), (6, 99.9), (10, 100))
        ]


class HindsightOracle(Policy):
    """The largest ratio that would not have overloaded the window: an upper bound, not deployable."""

    name = "oracle"

    def decide(self, inputs: DecisionInputs) -> np.ndarray:
        if inputs.future_max is None:
            raise ConfigError("the hindsight oracle needs the future; it cannot run live")
        return _from_peak(inputs.future_max.max(axis=1), inputs.ratios)


def _options(spec: Spec, known: dict[str, type]) -> dict[str, object]:
    expected = ", ".join(f"{k}=" for k in known)
    if spec.positional is not None:
        raise ConfigError(f"option {spec.positional!r}: expected one of {expected}")
    values: dict[str, object] = {}
    for key, raw in spec.params.items():
        if key not in known:
            raise ConfigError(f"option {key}={raw!r}: expected one of {expected}")
        try:
            values[key] = known[key](raw)
        except ValueError:
            raise ConfigError(f"option {key}={raw!r} is not a {known[key].__name__}") from None
    return values


def _fixed(spec: Spec) -> Policy:
    if spec.params:
        raise ConfigError(f"{spec.text}: fixed takes one ratio, e.g. fixed:1.2")
    try:
        ratio = float(spec.positional or 1.2)
    except ValueError:
        raise ConfigError(f"{spec.text}: the ratio must be a number like 1.2") from None
    if ratio < 1.0:
        raise ConfigError(f"{spec.text}: a ratio below 1.0 would sell fewer vCPUs than cores")
    return FixedRatio(ratio)


def _nsigma(spec: Spec) -> Policy:
    return NSigma(**_options(spec, {"n": float}))  # type: ignore[arg-type]


def _percentile(spec: Spec) -> Policy:
    options = _options(spec, {"p": float})
    if not 0 < float(options.get("p", 99.0)) <= 100:  # type: ignore[arg-type]
        raise ConfigError(f"{spec.text}: p must be in (0, 100]")
    return PercentileSum(**options)  # type: ignore[arg-type]


def _borg(spec: Spec) -> Policy:
    options = _options(spec, {"f": float})
    if not 0 < float(options.get("f", 0.9)) <= 1:  # type: ignore[arg-type]
        raise ConfigError(f"{spec.text}: f must be in (0, 1]")
    return BorgFraction(**options)  # type: ignore[arg-type]


def _max(spec: Spec) -> Policy:
    return MaxOfTwo(**_options(spec, {"n": float, "p": float}))  # type: ignore[arg-type]


def _oracle(spec: Spec) -> Policy:
    if spec.positional is not None or spec.params:
        raise ConfigError(f"{spec.text}: the oracle takes no options")
    return HindsightOracle()


def _protohail(spec: Spec) -> Policy:
    from strato.vm.protohail import ProtoHAIL

    if spec.positional is not None:
        raise ConfigError(
            f"protohail option {spec.positional!r}: expected k=, safety=, seed=, level= or model="
        )
    return ProtoHAIL.from_options(spec.params, text=spec.text)


POLICIES: Registry[Callable[[Spec], Policy]] = Registry("policy")
"""Policy name -> factory of the split spec (:func:`strato.core.specs.split_spec`)."""
POLICIES.register("fixed", _fixed)
POLICIES.register("nsigma", _nsigma)
POLICIES.register("percentile", _percentile)
POLICIES.register("borg", _borg)
POLICIES.register("max", _max)
POLICIES.register("oracle", _oracle)
POLICIES.register("protohail", _protohail)


def parse_policy(spec: str) -> Policy:
    """``fixed:1.2``, ``nsigma:n=3``, ``percentile:p=99``, ``borg:f=0.9``, ``max:n=3,p=99``, ``oracle``,
    ``protohail[:k=12,safety=0.1,history-days=7]``, ``protohail:model=PATH``."""
    parts = split_spec(spec, what="VM policy")
    return POLICIES.get(parts.head)(parts)


STATIC_BASELINES = ("fixed:1.2", "nsigma:n=3", "percentile:p=99", "borg:f=0.9", "max:n=3,p=99")
