"""The one grammar every workload option (``--trace``, ``--data``) is written in, parsed here.

A workload spec is one of

* ``synthetic`` or ``synthetic:key=value,...``: the domain's generator (its keys are the generator's);
* a named data set, ``set[:member][,key=value...]``: a folder of :func:`~strato.traces.datasets.data_root`
  (``azure-functions-2019:sampled/1350``, ``azure-llm-2023:code``, ``azure-vm-2017:periodic,seed=3``);
* a path, optionally with reader options after its last ``:`` (``traces/vm:start_s=0,days=7``).

Set names come first: a relative path that happens to be called like a set is written ``./name``. Which
options a domain's readers take is the caller's to say; an unknown one is an error listing the known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from strato.core.specs import split_spec
from strato.errors import ConfigError
from strato.traces.datasets import DATA_SETS, DOMAIN_WORDS, DataSet, Domain, data_sets


@dataclass(frozen=True)
class WorkloadSpec:
    """A parsed workload spec. ``path`` is set for named sets (resolved under the data root) and paths;
    ``options`` are the ``key=value`` items, for the generator (synthetic) or the reader."""

    text: str
    kind: Literal["synthetic", "named", "path"]
    path: Path | None = None
    data_set: DataSet | None = None
    member: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)


def accepted(domain: Domain) -> str:
    """What a spec of ``domain`` may be, for error messages and help."""
    sets = "; ".join(data_set.choices() for data_set in data_sets(domain))
    return f"synthetic[:key=value,...], a data set ({sets}), or a path"


def is_synthetic(text: str) -> bool:
    """Whether a spec names the generator (no file is read)."""
    return text.strip().partition(":")[0].strip() == "synthetic"


def parse_workload_spec(text: str, domain: Domain, *, options: Mapping[str, str] = {}) -> WorkloadSpec:
    """Parse ``text`` as a workload of ``domain``; ``options`` maps the reader options a named set or a
    path may carry to a one-line description (synthetic keys are checked by the generator)."""
    stripped = text.strip()
    if not stripped:
        raise ConfigError(f"empty workload spec; accepted: {accepted(domain)}")
    head = stripped.partition(":")[0].strip()
    if is_synthetic(stripped):
        parts = split_spec(stripped, what="workload")
        if parts.positional is not None:
            raise ConfigError(f"synthetic spec {stripped!r}: {parts.positional!r} is not key=value")
        return WorkloadSpec(stripped, "synthetic", options=parts.params)
    if head in DATA_SETS:
        data_set = DATA_SETS.get(head)
        if data_set.domain != domain:
            raise ConfigError(
                f"{stripped!r}: {head} holds {DOMAIN_WORDS[data_set.domain]}, not {DOMAIN_WORDS[domain]}; "
                f"accepted: {accepted(domain)}"
            )
        parts = split_spec(stripped, what="workload")
        _check_options(stripped, parts.params, options)
        member = data_set.member(parts.positional).name
        return WorkloadSpec(
            stripped, "named", data_set.locate(member), data_set, member, options=parts.params
        )
    path, given = _path_and_options(stripped)
    if not (path.exists() or (domain == "faas" and path.with_name(path.name + "_inv.csv").is_file())):
        raise ConfigError(
            f"{stripped!r}: no such file or directory, and not a data set; accepted: {accepted(domain)}"
        )
    _check_options(stripped, given, options)
    return WorkloadSpec(stripped, "path", path, options=given)


def _path_and_options(text: str) -> tuple[Path, Mapping[str, str]]:
    """A last ``:`` part made only of ``key=value`` items holds options; otherwise it is the path's."""
    if Path(text).exists():
        return Path(text), {}
    base, sep, tail = text.rpartition(":")
    if not sep or not tail or not all("=" in item for item in tail.split(",")):
        return Path(text), {}
    return Path(base), split_spec(f"path:{tail}", what="workload").params


def _check_options(text: str, given: Mapping[str, str], known: Mapping[str, str]) -> None:
    for key in given:
        if key not in known:
            listed = "; ".join(f"{k} ({v})" for k, v in known.items()) or "none"
            raise ConfigError(f"{text!r}: unknown option {key!r} (known: {listed})")
