"""Where real data is found: :func:`data_root` and the named data sets below it.

The data folder is, in this order: ``$STRATO_DATA``; in a source checkout (``<checkout>/src/strato``),
the ``shared/data`` folder beside the checkout (``<checkout>/../shared/data``), found from the package's
own location, never from the current directory; otherwise an error that says to set ``STRATO_DATA``.

A named set is a folder of the data root with known members, named ``set:member`` on the command line
(``azure-functions-2019:sampled/1350``, ``azure-llm-2023:code``, ``azure-vm-2017:periodic``); the folder
names are those of the data README. New sets (POLCA's GPU power traces) register a :class:`DataSet`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import strato
from strato.core.registry import Registry
from strato.errors import ConfigError

Domain = Literal["faas", "llm", "llm-profile", "vm"]
DOMAIN_WORDS: dict[Domain, str] = {
    "faas": "FaaS invocations",
    "llm": "LLM requests",
    "llm-profile": "LLM performance profiles",
    "vm": "VM CPU usage",
}


@dataclass(frozen=True)
class DataRoot:
    path: Path
    source: Literal["STRATO_DATA", "checkout"]


def find_data_root() -> DataRoot | None:
    """The data folder and how it was chosen, or ``None`` when neither source gives one."""
    configured = os.environ.get("STRATO_DATA")
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise ConfigError(f"STRATO_DATA={configured!r} is not a directory; point it at the data folder")
        return DataRoot(path, "STRATO_DATA")
    package = Path(strato.__file__).resolve().parent
    checkout = package.parents[1]
    # Installed copies live in site-packages; only a src/ layout checkout has ../shared/data beside it.
    if package.parent.name == "src" and (checkout / "pyproject.toml").is_file():
        shared = checkout.parent / "shared" / "data"
        if shared.is_dir():
            return DataRoot(shared, "checkout")
    return None


def data_root() -> Path:
    """``$STRATO_DATA``, else the checkout's ``../shared/data``; raises :class:`ConfigError` saying what to
    set when there is neither."""
    found = find_data_root()
    if found is None:
        raise ConfigError(
            "no data folder: set STRATO_DATA to the folder holding the traces "
            f"({', '.join(f'{name}/' for name in DATA_SETS.names())}), "
            "or run strato from a checkout with ../shared/data beside it"
        )
    return found.path


@dataclass(frozen=True)
class Member:
    """One member of a set: ``path`` (relative to the set's folder) is what readers are given, ``marker``
    the file whose presence means the member is there."""

    name: str
    path: str
    marker: str


@dataclass(frozen=True)
class DataSet:
    name: str
    domain: Domain
    description: str
    members: tuple[Member, ...]
    default: str | None = None
    """The member a spec without one means; ``None``: a member must be named."""

    def member(self, name: str | None) -> Member:
        if name is None:
            if self.default is None:
                raise ConfigError(f"data set {self.name} needs a member: {self.choices()}")
            name = self.default
        for member in self.members:
            if member.name == name:
                return member
        raise ConfigError(f"data set {self.name} has no member {name!r}: {self.choices()}")

    def choices(self) -> str:
        return ", ".join(f"{self.name}:{member.name}" for member in self.members)

    def locate(self, name: str | None, root: Path | None = None) -> Path:
        """The path a reader is given for a member; raises :class:`ConfigError` if its files are absent."""
        member = self.member(name)
        folder = (root or data_root()) / self.name
        if not (folder / member.marker).is_file():
            raise ConfigError(
                f"{self.name}:{member.name}: {folder / member.marker} is missing; set STRATO_DATA to a "
                f"folder holding {self.name}/ or give the file's path"
            )
        return folder / member.path


def _files(*names: str) -> tuple[Member, ...]:
    return tuple(Member(name, file, file) for name, file in (n.split("=", 1) for n in names))


DATA_SETS: Registry[DataSet] = Registry("data set")
for _set in (
    DataSet(
        "azure-functions-2019",
        "faas",
        "Azure Functions 2019, one day: vHive samples (one function per app) and the original layout",
        (
            *(Member(f"sampled/{n}", f"sampled/{n}", f"sampled/{n}_inv.csv") for n in (100, 500, 1000, 1350)),
            *(Member(d, d, f"{d}/invocations.csv") for d in ("raw-format-100-8h", "raw-format-10-day")),
        ),
    ),
    DataSet(
        "azure-functions-2021",
        "faas",
        "Azure Functions 2021 invocations (schema sample)",
        _files("sample-200-rows=sample-200-rows.csv"),
        default="sample-200-rows",
    ),
    DataSet(
        "azure-llm-2023",
        "llm",
        "Azure LLM inference 2023: coding and conversation requests, about an hour each",
        _files("code=AzureLLMInferenceTrace_code.csv", "conv=AzureLLMInferenceTrace_conv.csv"),
    ),
    DataSet(
        "splitwise-profiles",
        "llm-profile",
        "measured iteration times of the public Splitwise simulator",
        _files("perf_model=perf_model.csv"),
        default="perf_model",
    ),
    DataSet(
        "azure-vm-2017",
        "vm",
        "Azure VM CPU 2017 (V1) excerpt: 100 VMs and 78 periodic VMs, 5-minute slots",
        _files("microsoft=microsoft_avg_100.csv.gz", "periodic=periodic_avg_78.csv.gz"),
        default="microsoft",
    ),
):
    DATA_SETS.register(_set.name, _set)


def data_sets(domain: Domain | None = None) -> list[DataSet]:
    return [DATA_SETS.get(name) for name in DATA_SETS.names() if domain in (None, DATA_SETS.get(name).domain)]


@dataclass(frozen=True)
class MemberStatus:
    """Where one member of a named set would be read from, and whether it is there."""

    spec: str
    domain: Domain
    path: Path | None
    found: bool

    def to_json(self) -> dict[str, object]:
        return {
            "spec": self.spec,
            "domain": self.domain,
            "path": None if self.path is None else str(self.path),
            "found": self.found,
        }


def survey(root: DataRoot | None) -> list[MemberStatus]:
    """Every member of every named set, looked for under ``root`` (``None``: no data folder)."""
    rows: list[MemberStatus] = []
    for data_set in data_sets():
        for member in data_set.members:
            path = None if root is None else root.path / data_set.name / member.path
            found = root is not None and (root.path / data_set.name / member.marker).is_file()
            rows.append(MemberStatus(f"{data_set.name}:{member.name}", data_set.domain, path, found))
    return rows
