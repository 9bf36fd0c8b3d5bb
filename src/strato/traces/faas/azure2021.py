"""Reader for the Azure Functions 2021 invocation trace (one row per invocation).

The file has the columns ``app,func,end_timestamp,duration`` (seconds; the order may differ, extra columns
are ignored). An invocation starts at ``end_timestamp - duration``. A function is identified by its
``(app, func)`` pair; its id is the ``func`` hash, prefixed with ``app/`` only where the same hash occurs
under several apps, so ids stay unique. Apps and functions are numbered in order of first appearance and
the events are sorted by start time.

Durations are recorded to the millisecond while end times carry more digits, so a start up to 1 ms before
time 0 is rounding, not corruption: it is clamped to 0 (and counted in the notes); anything earlier is an
error. The trace has no memory figures: every app gets ``memory_mb``, and a note says so. Per-function
mean and percentiles (``DURATION_PERCENTILES``, linear interpolation, ms) are computed from the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError, TraceFormatError
from strato.traces.csvio import read_table
from strato.traces.faas.azure2019 import UNKNOWN_TRIGGER
from strato.traces.faas.model import DURATION_PERCENTILES, Workload

_REQUIRED = ("app", "func", "end_timestamp", "duration")
_START_TOLERANCE_S = 1e-3


def read_azure2021(path: str | Path, *, memory_mb: float = 170.0) -> Workload:
    """Read an Azure Functions 2021 invocation trace into an events :class:`Workload`.

    Raises :class:`TraceFormatError` naming file, row and column for anything malformed, and
    :class:`ConfigError` for a ``memory_mb`` that is not positive.
    """
    if not np.isfinite(memory_mb) or memory_mb <= 0:
        raise ConfigError(f"memory_mb must be a positive number of MB, not {memory_mb!r}")
    source = Path(path)
    if source.is_dir():
        raise TraceFormatError(source, "is a directory; pass the trace's CSV file")
    table = read_table(source, _REQUIRED)
    if not table.rows:
        raise TraceFormatError(source, "no invocations after the header", row=2)

    end = table.floats("end_timestamp")
    duration = table.floats("duration")
    start = end - duration
    early = np.flatnonzero(start < -_START_TOLERANCE_S)
    if early.size:
        i = int(early[0])
        raise TraceFormatError(
            source,
            f"end_timestamp {end[i]:g} is before duration {duration[i]:g}: the invocation would start "
            "before time 0",
            row=i + 2,
            column="end_timestamp",
        )
    n_clamped = int(np.count_nonzero(start < 0))
    start = np.maximum(start, 0.0)

    c_app, c_func = table.index("app"), table.index("func")
    app_index: dict[str, int] = {}
    function_key: dict[tuple[str, str], int] = {}
    function_app: list[int] = []
    function_hash: list[str] = []
    event_function = np.empty(len(table.rows), dtype=np.int64)
    for r, row in enumerate(table.rows):
        app, func = row[c_app].strip(), row[c_func].strip()
        for value, column in ((app, "app"), (func, "func")):
            if not value:
                raise TraceFormatError(source, "empty id", row=r + 2, column=column)
        f = function_key.get((app, func))
        if f is None:
            a = app_index.setdefault(app, len(app_index))
            f = function_key[(app, func)] = len(function_app)
            function_app.append(a)
            function_hash.append(func)
        event_function[r] = f

    app_ids = list(app_index)
    hash_uses: dict[str, int] = {}
    for func in function_hash:
        hash_uses[func] = hash_uses.get(func, 0) + 1
    function_ids = [
        func if hash_uses[func] == 1 else f"{app_ids[function_app[i]]}/{func}"
        for i, func in enumerate(function_hash)
    ]
    n_functions = len(function_ids)
    mean_ms, percentiles_ms = _duration_stats(event_function, duration * 1000.0, n_functions)

    order = np.argsort(start, kind="stable")
    notes = [f"memory is not in the Azure 2021 trace: every app was given {memory_mb:g} MB"]
    if n_clamped:
        notes.append(f"{n_clamped} invocations started up to 1 ms before time 0 (rounding); moved to 0")
    shared = sum(1 for uses in hash_uses.values() if uses > 1)
    if shared:
        notes.append(f"{shared} func hashes occur under several apps; their ids are prefixed with 'app/'")
    return Workload(
        name=source.stem,
        app_ids=np.asarray(app_ids, dtype=np.str_),
        app_memory_mb=np.full(len(app_ids), float(memory_mb), dtype=np.float64),
        function_ids=np.asarray(function_ids, dtype=np.str_),
        function_app=np.asarray(function_app, dtype=np.int64),
        function_trigger=np.full(n_functions, UNKNOWN_TRIGGER, dtype=np.str_),
        duration_mean_ms=mean_ms,
        duration_percentiles_ms=percentiles_ms,
        events=(event_function[order], start[order], duration[order]),
        source=str(source),
        notes=tuple(notes),
    )


def _duration_stats(
    function: NDArray[np.int64], duration_ms: NDArray[np.float64], n_functions: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-function mean and percentiles, vectorised: every function has at least one invocation."""
    counts = np.bincount(function, minlength=n_functions)
    mean = np.bincount(function, weights=duration_ms, minlength=n_functions) / counts
    order = np.lexsort((duration_ms, function))
    ordered = duration_ms[order]
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    # numpy's default "linear" percentile: position q/100 * (n - 1) between the order statistics.
    position = np.asarray(DURATION_PERCENTILES)[None, :] / 100.0 * (counts[:, None] - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, counts[:, None] - 1)
    low_value = ordered[first[:, None] + lower]
    high_value = ordered[first[:, None] + upper]
    percentiles = low_value + (high_value - low_value) * (position - lower)
    # Interpolation can round a hair below the previous knot; the model requires non-decreasing rows.
    return mean.astype(np.float64), np.maximum.accumulate(percentiles, axis=1).astype(np.float64)
