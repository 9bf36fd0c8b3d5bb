"""Cluster designs: pools of machines with roles, named as in the Splitwise paper.

``baseline-a100``/``baseline-h100``: every machine ``mixed`` (continuous batching of prompts and tokens).
``splitwise-aa``/``-hh``/``-ha``/``-hhcap``: a ``prompt`` pool and a ``token`` pool, on A100 (A) or H100 (H)
machines; ``hhcap`` runs the token pool on power-capped H100s. New designs register with
:func:`register_design`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from strato.errors import ConfigError
from strato.llm.catalog import Machine, get_machine

ROLES = ("mixed", "prompt", "token")


@dataclass(frozen=True)
class Pool:
    role: str
    machine: Machine
    count: int

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"pool role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.count < 1:
            raise ConfigError(f"a {self.role} pool needs at least one machine, got {self.count}")


@dataclass(frozen=True)
class Design:
    name: str
    pools: tuple[Pool, ...]

    @property
    def machines(self) -> int:
        return sum(pool.count for pool in self.pools)

    @property
    def cost_per_hour(self) -> float:
        return sum(pool.count * pool.machine.cost_per_hour for pool in self.pools)

    @property
    def power_kw(self) -> float:
        """Provisioned power: every machine at full load."""
        return sum(pool.count * pool.machine.power_kw for pool in self.pools)

    def label(self) -> str:
        return f"{self.name} " + " + ".join(
            f"{p.count}{p.role[0].upper()} {p.machine.name}" for p in self.pools
        )


DesignFactory = Callable[[int | None, int | None, int | None], Design]
_DESIGNS: dict[str, DesignFactory] = {}


def register_design(name: str, factory: DesignFactory) -> None:
    _DESIGNS[name] = factory


def design_names() -> list[str]:
    return sorted(_DESIGNS)


def make_design(
    name: str, *, prompt: int | None = None, token: int | None = None, machines: int | None = None
) -> Design:
    """A design by name (splitwise: ``prompt`` and ``token`` pool sizes; baselines: ``machines``)."""
    key = name.lower()
    if key not in _DESIGNS:
        raise ConfigError(f"unknown design {name!r} (known: {', '.join(design_names())})")
    return _DESIGNS[key](prompt, token, machines)


def _baseline(machine: str) -> DesignFactory:
    def build(prompt: int | None, token: int | None, machines: int | None) -> Design:
        count = machines if machines is not None else (prompt or 0) + (token or 0)
        if count < 1:
            raise ConfigError("a baseline design needs --machines N (or --prompt/--token, which add up)")
        return Design(f"baseline-{machine.split('-')[0]}", (Pool("mixed", get_machine(machine), count),))

    return build


def _splitwise(label: str, prompt_machine: str, token_machine: str) -> DesignFactory:
    def build(prompt: int | None, token: int | None, machines: int | None) -> Design:
        if prompt is None or token is None:
            raise ConfigError(f"{label} needs --prompt N and --token M (the two pool sizes)")
        return Design(
            label,
            (
                Pool("prompt", get_machine(prompt_machine), prompt),
                Pool("token", get_machine(token_machine), token),
            ),
        )

    return build


register_design("baseline-a100", _baseline("a100-80gb"))
register_design("baseline-h100", _baseline("h100-80gb"))
register_design("splitwise-aa", _splitwise("splitwise-aa", "a100-80gb", "a100-80gb"))
register_design("splitwise-hh", _splitwise("splitwise-hh", "h100-80gb", "h100-80gb"))
register_design("splitwise-ha", _splitwise("splitwise-ha", "h100-80gb", "a100-80gb"))
register_design("splitwise-hhcap", _splitwise("splitwise-hhcap", "h100-80gb", "h100-80gb-pcap"))
