"""One entry point for every FaaS workload a user can name on the command line."""

from __future__ import annotations

from pathlib import Path

from strato.traces.csvio import first_line
from strato.traces.faas.model import Workload
from strato.traces.spec import parse_workload_spec

_AZURE_2021_HEADER = ("app", "func", "end_timestamp", "duration")


def load_workload(spec: str) -> Workload:
    """A workload named the way every ``--trace`` names it (:mod:`strato.traces.spec`):
    ``synthetic[:k=v,...]``, a named set (``azure-functions-2019:sampled/1350``,
    ``azure-functions-2021``), or a path: a directory, file or sampled prefix of the Azure 2019 trace, or a
    2021 invocation CSV (told apart by its header)."""
    parsed = parse_workload_spec(spec, "faas")
    if parsed.kind == "synthetic":
        from strato.traces.faas.synth import generate, parse_synth_spec

        return generate(parse_synth_spec(parsed.text))
    path = parsed.path
    assert path is not None  # set for named sets and paths
    if path.is_file() and _header(path)[: len(_AZURE_2021_HEADER)] == _AZURE_2021_HEADER:
        from strato.traces.faas.azure2021 import read_azure2021

        return read_azure2021(path)
    from strato.traces.faas.azure2019 import read_azure2019

    return read_azure2019(path)


def _header(path: Path) -> tuple[str, ...]:
    return tuple(field.strip().lower() for field in first_line(path).split(","))
