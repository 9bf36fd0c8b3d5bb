"""Reader and writer for the Azure Functions 2019 trace (invocation counts per function and minute).

Two layouts are read, told apart by the invocation file's header rather than by file names:

* the original public layout: ``HashOwner,HashApp,HashFunction,Trigger,1,2,...,1440`` (any contiguous run of
  1-based minute labels, e.g. ``480..959`` for an excerpt), with the companions
  ``HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0..100`` (durations, ms)
  and ``HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1..100`` (memory per app).
  File names ``invocations.csv``/``durations.csv``/``memory.csv`` or the public
  ``invocations_per_function_md.anon.dNN.csv``/``function_durations_percentiles.anon.dNN.csv``/
  ``app_memory_percentiles.anon.dNN.csv``;
* the sampled layout of the vHive In-Vitro sampler: ``HashFunction,HashOwner,HashApp,minute_1..minute_1440``
  (no trigger: every function gets ``"unknown"``) in ``N_inv.csv``, with ``N_run.csv`` (durations, original
  columns) and ``N_mem.csv`` (memory, original per-app columns).

Companion columns are looked up by name, so their order does not matter.

Memory rule. Keep-alive acts on applications (``HashApp``), so a workload has one memory value per app: its
``AverageAllocatedMb``. A memory file with a ``HashFunction`` column (the local copies in
``raw-format-*``) repeats its app's row once per function; there every app has a single function, so
nothing tells whether a multi-function app's value would be repeated or split. The app value is therefore
taken once, not summed; should the rows of one app disagree, the largest is kept (sizing for the worst
case) and a note says how many apps that hit. Only rows of functions in the invocation file count. In the
sampled layout the sampler made every function its own app and gave it its share of the app's memory, so
there the per-app row is already the function's value.

Imputation. An app without a memory row gets the median memory of the apps that have one; a function
without a durations row gets the mean and percentiles of the function with the median ``Average`` (a real
profile, so mean and percentiles stay consistent). Rows for functions or apps absent from the invocation
file are ignored. Each of these, and percentile rows that had to be clipped to be non-decreasing, is
counted in ``Workload.notes``. Repeated companion rows keep the first occurrence (noted); a function
listed twice in the invocation file is an error.

Speed. The count block (about 66 M cells for a public day) is parsed by :func:`numpy.loadtxt` in one call;
only when that fails is the file scanned line by line to report the exact bad row and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError, TraceFormatError
from strato.traces.csvio import load_block, read_lines, read_table, require_columns, wrong_field_count
from strato.traces.faas.model import DURATION_PERCENTILES, Workload

_ID_REQUIRED = ("HashOwner", "HashApp", "HashFunction")
_ID_OPTIONAL = ("Trigger",)
_PERCENTILE_COLUMNS = tuple(f"percentile_Average_{q:g}" for q in DURATION_PERCENTILES)
_DURATION_REQUIRED = ("HashOwner", "HashApp", "HashFunction", "Average", *_PERCENTILE_COLUMNS)
_DURATION_HEADER = (
    "HashOwner",
    "HashApp",
    "HashFunction",
    "Average",
    "Count",
    "Minimum",
    "Maximum",
    *_PERCENTILE_COLUMNS,
)
_MEMORY_REQUIRED = ("HashOwner", "HashApp", "AverageAllocatedMb")
_MEMORY_HEADER = (
    "HashOwner",
    "HashApp",
    "SampleCount",
    "AverageAllocatedMb",
    *(f"AverageAllocatedMb_pct{p}" for p in (1, 5, 25, 50, 75, 95, 99, 100)),
)
_MINUTE_LABEL = re.compile(r"(?:minute_)?(\d+)")
_COUNT_FIELD = re.compile(r"\s*([+-]?\d+)\s*")
# loadtxt accepts surrounding blanks and a sign; this matches the clean common case so the error scan
# can skip good lines at C speed. Eighteen digits always fit in an int64; longer ones need a closer look.
_CLEAN_COUNTS = re.compile(r"\d{1,18}(?:,\d{1,18})*")
_PUBLIC_INVOCATIONS = re.compile(r"invocations_per_function_md\.anon\.(d\d+)\.csv")
_SAMPLED_INVOCATIONS = re.compile(r"(.+)_inv\.csv")
_INT64_MAX = int(np.iinfo(np.int64).max)
UNKNOWN_TRIGGER = "unknown"


@dataclass(frozen=True)
class _Files:
    invocations: Path
    durations: Path
    memory: Path
    name: str


# --------------------------------------------------------------------------------------------- public


def read_azure2019(
    path: str | Path,
    *,
    invocations: str | Path | None = None,
    durations: str | Path | None = None,
    memory: str | Path | None = None,
) -> Workload:
    """Read an Azure Functions 2019 trace into a minute-count :class:`Workload`.

    ``path`` is a directory holding one trace, an invocation file, or a sampled prefix such as
    ``sampled/1350``. ``invocations``, ``durations`` and ``memory`` override the files found from it.
    Raises :class:`TraceFormatError` naming file, row and column for anything malformed.
    """
    files = _resolve_files(Path(path), invocations, durations, memory)
    notes: list[str] = []

    inv = _read_invocations(files.invocations)
    function_index = {f: i for i, f in enumerate(inv.function_ids)}

    mean_ms, percentiles_ms = _read_durations(files.durations, inv, function_index, notes)
    app_memory = _read_memory(files.memory, inv, function_index, notes)

    return Workload(
        name=files.name,
        app_ids=np.asarray(inv.app_ids, dtype=np.str_),
        app_memory_mb=app_memory,
        function_ids=np.asarray(inv.function_ids, dtype=np.str_),
        function_app=np.asarray(inv.function_app, dtype=np.int64),
        function_trigger=np.asarray(inv.triggers, dtype=np.str_),
        duration_mean_ms=mean_ms,
        duration_percentiles_ms=percentiles_ms,
        minute_counts=inv.counts,
        first_minute=inv.first_minute,
        source=str(files.invocations),
        notes=tuple(notes),
    )


def write_azure2019(workload: Workload, directory: str | Path) -> None:
    """Write a minute-count workload in the original layout: ``invocations.csv``, ``durations.csv`` and
    ``memory.csv`` (per app) in ``directory``, so that :func:`read_azure2019` reads it back.

    The workload has no owners, so each app's id is written as its ``HashOwner``. Only the memory average
    is known, so the memory percentile columns repeat it and ``SampleCount`` is 1.
    """
    if workload.minute_counts is None:
        raise ConfigError(
            f"workload {workload.name!r} holds individual invocations, not per-minute counts; "
            "the Azure 2019 layout can only store minute counts"
        )
    if workload.first_minute < 0:
        raise ConfigError(f"first_minute must be >= 0, not {workload.first_minute}")
    for what, ids in (
        ("app", workload.app_ids),
        ("function", workload.function_ids),
        ("trigger", workload.function_trigger),
    ):
        for value in ids.tolist():
            if not value or any(c in value for c in ',"\r\n'):
                raise ConfigError(f"{what} id {value!r} cannot be written to a CSV field")
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {out}: {exc.strerror}") from exc

    apps = workload.app_ids.tolist()
    functions = workload.function_ids.tolist()
    triggers = workload.function_trigger.tolist()
    function_app = workload.function_app.tolist()
    counts = workload.minute_counts
    n_minutes = counts.shape[1]
    first_label = workload.first_minute + 1

    with (out / "invocations.csv").open("w", encoding="utf-8", newline="\n") as f:
        labels = ",".join(str(m) for m in range(first_label, first_label + n_minutes))
        f.write(f"HashOwner,HashApp,HashFunction,Trigger,{labels}\n")
        for i, function in enumerate(functions):
            app = apps[function_app[i]]
            f.write(f"{app},{app},{function},{triggers[i]},{','.join(map(str, counts[i].tolist()))}\n")

    totals = counts.sum(axis=1).tolist()
    with (out / "durations.csv").open("w", encoding="utf-8", newline="\n") as f:
        f.write(",".join(_DURATION_HEADER) + "\n")
        for i, function in enumerate(functions):
            app = apps[function_app[i]]
            pct = [repr(float(v)) for v in workload.duration_percentiles_ms[i].tolist()]
            mean = repr(float(workload.duration_mean_ms[i]))
            f.write(f"{app},{app},{function},{mean},{totals[i]},{pct[0]},{pct[-1]},{','.join(pct)}\n")

    with (out / "memory.csv").open("w", encoding="utf-8", newline="\n") as f:
        f.write(",".join(_MEMORY_HEADER) + "\n")
        n_pct = len(_MEMORY_HEADER) - 4
        for app, mb in zip(apps, workload.app_memory_mb.tolist(), strict=True):
            value = repr(float(mb))
            f.write(f"{app},{app},1,{value},{','.join([value] * n_pct)}\n")


# ------------------------------------------------------------------------------------------ locating


def _resolve_files(
    base: Path,
    invocations: str | Path | None,
    durations: str | Path | None,
    memory: str | Path | None,
) -> _Files:
    if invocations is not None:
        inv = Path(invocations)
    elif base.is_dir():
        inv = _find_invocations(base)
    elif base.is_file():
        inv = base
    elif base.with_name(base.name + "_inv.csv").is_file():
        inv = base.with_name(base.name + "_inv.csv")
    else:
        raise TraceFormatError(base, "missing file: no such file, directory or sampled prefix")
    if not inv.is_file():
        raise TraceFormatError(inv, "missing file: the invocation file does not exist")

    name = inv.parent.name or "azure2019"
    if match := _SAMPLED_INVOCATIONS.fullmatch(inv.name):
        label = match.group(1)
        default_durations, default_memory = f"{label}_run.csv", f"{label}_mem.csv"
        name = f"{name}/{label}"
    elif match := _PUBLIC_INVOCATIONS.fullmatch(inv.name):
        day = match.group(1)
        default_durations = f"function_durations_percentiles.anon.{day}.csv"
        default_memory = f"app_memory_percentiles.anon.{day}.csv"
        name = f"{name}/{day}"
    else:
        default_durations, default_memory = "durations.csv", "memory.csv"
        if inv.name != "invocations.csv":
            name = f"{name}/{inv.stem}"
    dur = Path(durations) if durations is not None else inv.with_name(default_durations)
    mem = Path(memory) if memory is not None else inv.with_name(default_memory)
    for companion, what, option in ((dur, "durations", "durations="), (mem, "memory", "memory=")):
        if not companion.is_file():
            raise TraceFormatError(
                companion, f"missing file: the {what} file for {inv.name} does not exist (pass {option})"
            )
    return _Files(invocations=inv, durations=dur, memory=mem, name=name)


def _find_invocations(directory: Path) -> Path:
    plain = directory / "invocations.csv"
    if plain.is_file():
        return plain
    for pattern, regex in (
        ("invocations_per_function_md.anon.d*.csv", _PUBLIC_INVOCATIONS),
        ("*_inv.csv", _SAMPLED_INVOCATIONS),
    ):
        found = sorted(p for p in directory.glob(pattern) if regex.fullmatch(p.name))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise TraceFormatError(
                directory,
                f"holds several traces ({names}); pass one of the files"
                + (
                    f" or a prefix such as {directory / found[0].name[: -len('_inv.csv')]}"
                    if pattern == "*_inv.csv"
                    else ""
                ),
            )
    raise TraceFormatError(
        directory,
        "missing file: no invocations.csv, invocations_per_function_md.anon.dNN.csv or N_inv.csv here",
    )


# ------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Invocations:
    function_ids: list[str]
    function_owner: list[str]
    function_app: list[int]
    app_ids: list[str]
    app_owners: list[set[str]]
    triggers: list[str]
    counts: NDArray[np.int64]
    first_minute: int


def _parse_invocation_header(path: Path, header: list[str]) -> tuple[int, int]:
    """Return (number of id columns, first minute label); the minute labels must run on by one."""
    n_id = 0
    while n_id < len(header) and not _MINUTE_LABEL.fullmatch(header[n_id]):
        n_id += 1
    ids = header[:n_id]
    require_columns(path, ids, _ID_REQUIRED)
    for j, name in enumerate(ids):
        if name not in _ID_REQUIRED and name not in _ID_OPTIONAL:
            raise TraceFormatError(path, f"unexpected column {name!r}", row=1, column=j + 1)
        if name in ids[:j]:
            raise TraceFormatError(path, f"column {name!r} appears twice", row=1, column=name)
    if n_id == len(header):
        raise TraceFormatError(path, "no minute columns (expected 1,2,... or minute_1,minute_2,...)", row=1)
    labels: list[int] = []
    for j in range(n_id, len(header)):
        match = _MINUTE_LABEL.fullmatch(header[j])
        if not match:
            raise TraceFormatError(path, "not a minute label", row=1, column=header[j] or j + 1)
        labels.append(int(match.group(1)))
        if len(labels) > 1 and labels[-1] != labels[-2] + 1:
            raise TraceFormatError(
                path,
                f"non-contiguous minute columns: {header[j]} follows {header[j - 1]}",
                row=1,
                column=header[j],
            )
    if labels[0] < 1:
        raise TraceFormatError(path, "minute labels are 1-based; found 0", row=1, column=header[n_id])
    return n_id, labels[0]


def _read_invocations(path: Path) -> _Invocations:
    lines = read_lines(path)
    header = [name.strip() for name in lines[0].split(",")]
    n_id, first_label = _parse_invocation_header(path, header)
    n_minutes = len(header) - n_id
    if len(lines) < 2:
        raise TraceFormatError(path, "no data rows after the header", row=2)

    col = {name: header.index(name) for name in header[:n_id]}
    c_owner, c_app, c_function = col["HashOwner"], col["HashApp"], col["HashFunction"]
    c_trigger = col.get("Trigger")
    function_ids: list[str] = []
    function_owner: list[str] = []
    function_app: list[int] = []
    triggers: list[str] = []
    app_index: dict[str, int] = {}
    app_owners: list[set[str]] = []
    first_row: dict[str, int] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        parts = line.split(",", n_id)
        if len(parts) <= n_id or parts[n_id].count(",") != n_minutes - 1:
            raise wrong_field_count(path, header, line_no, line.count(",") + 1)
        function, app, owner = parts[c_function].strip(), parts[c_app].strip(), parts[c_owner].strip()
        for value, name in ((function, "HashFunction"), (app, "HashApp"), (owner, "HashOwner")):
            if not value:
                raise TraceFormatError(path, "empty id", row=line_no, column=name)
        if function in first_row:
            raise TraceFormatError(
                path,
                f"function {function} appears twice (first at row {first_row[function]})",
                row=line_no,
                column="HashFunction",
            )
        first_row[function] = line_no
        if app not in app_index:
            app_index[app] = len(app_index)
            app_owners.append(set())
        app_owners[app_index[app]].add(owner)
        function_ids.append(function)
        function_owner.append(owner)
        function_app.append(app_index[app])
        trigger = parts[c_trigger].strip() if c_trigger is not None else ""
        triggers.append(trigger or UNKNOWN_TRIGGER)

    counts = _parse_counts(path, lines, header, n_id)
    return _Invocations(
        function_ids=function_ids,
        function_owner=function_owner,
        function_app=function_app,
        app_ids=list(app_index),
        app_owners=app_owners,
        triggers=triggers,
        counts=counts,
        first_minute=first_label - 1,
    )


def _parse_counts(path: Path, lines: list[str], header: list[str], n_id: int) -> NDArray[np.int64]:
    try:
        counts: NDArray[np.int64] = load_block(lines[1:], range(n_id, len(header)), np.int64)
    except ValueError as exc:
        _locate_bad_count(path, lines, header, n_id)
        raise TraceFormatError(path, f"cannot parse the invocation counts: {exc}") from None
    # min() is one cheap pass; the argwhere that locates the cell only runs when there is one.
    if counts.size and counts.min() < 0:
        i, j = (int(v) for v in np.argwhere(counts < 0)[0])
        raise TraceFormatError(
            path, f"negative invocation count {counts[i, j]}", row=i + 2, column=header[n_id + j]
        )
    return counts


def _locate_bad_count(path: Path, lines: list[str], header: list[str], n_id: int) -> None:
    """Raise for the first cell that is not a non-negative integer (slow; only runs after a failure)."""
    for line_no, line in enumerate(lines[1:], start=2):
        rest = line.split(",", n_id)[n_id]
        if _CLEAN_COUNTS.fullmatch(rest):
            continue
        for j, field in enumerate(rest.split(",")):
            column = header[n_id + j]
            match = _COUNT_FIELD.fullmatch(field)
            if not match:
                raise TraceFormatError(
                    path, f"invocation count {field!r} is not an integer", row=line_no, column=column
                )
            value = int(match.group(1))
            if value < 0:
                raise TraceFormatError(path, f"negative invocation count {value}", row=line_no, column=column)
            if value > _INT64_MAX:
                raise TraceFormatError(
                    path, f"invocation count {value} is too large", row=line_no, column=column
                )


def _read_durations(
    path: Path, inv: _Invocations, function_index: dict[str, int], notes: list[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    table = read_table(path, _DURATION_REQUIRED)
    table.check_not_empty(("HashOwner", "HashApp", "HashFunction"))
    mean = table.floats("Average")
    pct = np.column_stack([table.floats(c) for c in _PERCENTILE_COLUMNS]).reshape(
        len(table.rows), len(_PERCENTILE_COLUMNS)
    )

    n_functions = len(inv.function_ids)
    row_of = np.full(n_functions, -1, dtype=np.int64)
    c_owner, c_app, c_function = table.index("HashOwner"), table.index("HashApp"), table.index("HashFunction")
    extra = repeated = 0
    for r, row in enumerate(table.rows):
        i = function_index.get(row[c_function].strip())
        if i is None:
            extra += 1
            continue
        _check_same(path, r + 2, "HashApp", row[c_app].strip(), inv.app_ids[inv.function_app[i]])
        _check_same(path, r + 2, "HashOwner", row[c_owner].strip(), inv.function_owner[i])
        if row_of[i] >= 0:
            repeated += 1
        else:
            row_of[i] = r

    known = row_of >= 0
    if not known.any():
        raise TraceFormatError(
            path, "no durations row matches a function of the invocation file; cannot impute durations"
        )
    out_mean = np.empty(n_functions, dtype=np.float64)
    out_pct = np.empty((n_functions, len(_PERCENTILE_COLUMNS)), dtype=np.float64)
    out_mean[known] = mean[row_of[known]]
    out_pct[known] = pct[row_of[known]]

    clipped = np.maximum.accumulate(out_pct[known], axis=1)
    n_clipped = int(np.count_nonzero((clipped != out_pct[known]).any(axis=1)))
    out_pct[known] = clipped
    if n_clipped:
        notes.append(
            f"duration percentiles of {n_clipped} functions were not non-decreasing; "
            "each was raised to the running maximum of the lower ones"
        )
    n_missing = int(np.count_nonzero(~known))
    if n_missing:
        known_idx = np.flatnonzero(known)
        median_fn = int(known_idx[np.argsort(out_mean[known_idx], kind="stable")[(known_idx.size - 1) // 2]])
        out_mean[~known] = out_mean[median_fn]
        out_pct[~known] = out_pct[median_fn]
        notes.append(
            f"durations imputed for {n_missing} of {n_functions} functions without a durations row: "
            f"copied from the median function ({out_mean[median_fn]:g} ms average)"
        )
    if extra:
        notes.append(f"{extra} durations rows for functions not in the invocation file were ignored")
    if repeated:
        notes.append(f"{repeated} repeated durations rows were ignored (the first row of a function is used)")
    return out_mean, out_pct


def _check_same(path: Path, row: int, column: str, found: str, expected: str) -> None:
    if found != expected:
        raise TraceFormatError(
            path,
            f"mismatched hashes: {column} is {found} here but {expected} in the invocation file",
            row=row,
            column=column,
        )


def _read_memory(
    path: Path, inv: _Invocations, function_index: dict[str, int], notes: list[str]
) -> NDArray[np.float64]:
    table = read_table(path, _MEMORY_REQUIRED)
    per_function = "HashFunction" in table.header
    id_columns = ("HashOwner", "HashApp", "HashFunction") if per_function else ("HashOwner", "HashApp")
    table.check_not_empty(id_columns)
    value = table.floats("AverageAllocatedMb")

    app_index = {a: i for i, a in enumerate(inv.app_ids)}
    n_apps = len(inv.app_ids)
    memory = np.full(n_apps, np.nan, dtype=np.float64)
    conflicting: set[int] = set()
    extra = 0
    c_owner, c_app = table.index("HashOwner"), table.index("HashApp")
    c_function = table.index("HashFunction") if per_function else -1
    for r, row in enumerate(table.rows):
        app, owner = row[c_app].strip(), row[c_owner].strip()
        if per_function:
            fn = function_index.get(row[c_function].strip())
            if fn is None:
                extra += 1
                continue
            _check_same(path, r + 2, "HashApp", app, inv.app_ids[inv.function_app[fn]])
            _check_same(path, r + 2, "HashOwner", owner, inv.function_owner[fn])
            a = inv.function_app[fn]
        else:
            found = app_index.get(app)
            if found is None:
                extra += 1
                continue
            a = found
            if owner not in inv.app_owners[a]:
                _check_same(path, r + 2, "HashOwner", owner, sorted(inv.app_owners[a])[0])
        if np.isnan(memory[a]):
            memory[a] = value[r]
        elif memory[a] != value[r]:
            conflicting.add(a)
            memory[a] = max(memory[a], value[r])

    known = ~np.isnan(memory)
    if not known.any():
        raise TraceFormatError(
            path, "no memory row matches an app of the invocation file; cannot impute memory"
        )
    n_missing = int(np.count_nonzero(~known))
    if n_missing:
        median = float(np.median(memory[known]))
        memory[~known] = median
        notes.append(
            f"memory imputed for {n_missing} of {n_apps} apps without a memory row: "
            f"median of the others ({median:g} MB)"
        )
    if conflicting:
        notes.append(f"{len(conflicting)} apps had memory rows that disagree; the largest value was kept")
    if extra:
        unit = "functions" if per_function else "apps"
        notes.append(f"{extra} memory rows for {unit} not in the invocation file were ignored")
    return memory
