"""One entry point for every workload a user can name on the command line."""

from __future__ import annotations

from pathlib import Path

from strato.errors import TraceFormatError
from strato.traces.model import Workload

_AZURE_2021_HEADER = ("app", "func", "end_timestamp", "duration")


def load_workload(spec: str) -> Workload:
    """``synthetic[:k=v,...]``, a directory or file of the Azure 2019 trace, or a 2021 invocation CSV."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from strato.traces.synth import generate, parse_synth_spec

        return generate(parse_synth_spec(spec))
    path = Path(spec)
    if path.is_file() and _first_line(path)[: len(_AZURE_2021_HEADER)] == _AZURE_2021_HEADER:
        from strato.traces.azure2021 import read_azure2021

        return read_azure2021(path)
    from strato.traces.azure2019 import read_azure2019

    return read_azure2019(path)


def _first_line(path: Path) -> tuple[str, ...]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            line = handle.readline()
    except OSError as error:
        raise TraceFormatError(path, f"cannot read: {error.strerror}") from None
    return tuple(field.strip().lower() for field in line.strip().split(","))
