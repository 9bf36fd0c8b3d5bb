"""VM CPU-utilisation data for the oversubscription domain: readers, VM sizes and the ``--data`` entry point.

Three sources become a :class:`~strato.vm.model.VmUsage` (``avg_pct``/``max_pct`` as (slots, VMs) CPU %):

Azure VM utilisation, 2017 excerpt (:func:`read_azure_2017`)
    Two files per set, ``<kind>_avg_<n>.csv[.gz]`` and ``<kind>_max_<n>.csv[.gz]`` (kind ``microsoft`` or
    ``periodic``): the per-slot average and maximum CPU % of ``n`` VMs. Header: a first cell that is empty
    (``microsoft``) or ``rownames`` (``periodic``), then one column per VM. Each row: the slot number, which
    must run 1, 2, 3, ... without gaps or repeats, then one CPU % per VM. Slots are 5 minutes
    (``microsoft``: 8004 slots, 27.8 days; ``periodic``: 8400 slots, 29.2 days). A ``periodic`` column is
    named ``<vm id> <period hours>``; the id is the part before the space and the period is kept as the VM
    class ``periodic-<h>h``. The published periodic set lists VM 83972 twice (periods 1 h and 24 h) with
    identical data: such a VM is kept once, with its first column's class, and a note in ``name`` says so
    (77 VMs). ``microsoft`` VMs get the class ``unknown``. The files carry no VM sizes, so
    sizes are drawn by :func:`draw_vcpus` (recorded in ``vcpus_source``) unless a ``vm_id,vcpus`` CSV is
    given.

Public Azure VM trace, V1 layout (:func:`read_public_vm_trace`)
    ``vmtable.csv`` (no header): ``vmid, subscriptionid, deploymentid, vmcreated, vmdeleted, maxcpu, avgcpu,
    p95maxcpu, vmcategory, vmcorecount, vmmemory``, and ``vm_cpu_readings-file-*.csv`` (no header):
    ``timestamp, vmid, mincpu, maxcpu, avgcpu`` with timestamps in seconds, 300 s apart. See that function
    for the window, which VMs are kept, and how core-count buckets are read.

Synthetic (:mod:`strato.vm.synth`)
    ``synthetic[:vms=100,days=28,seed=0,...]``, generated offline; the embedded default.

:func:`load_vm_usage` is what every command-line ``--data`` goes through, in the workload grammar of
:mod:`strato.traces.spec` (the named set ``azure-vm-2017[:microsoft|periodic]``, a path, or synthetic).

Validation. Every reader raises :class:`~strato.errors.TraceFormatError` naming the file, the 1-based line
(``row``, the header being line 1 where there is one) and the column (for a CPU cell, the VM's header
name) for: a header without VM ids, a row with the wrong number of cells, an empty or non-numeric cell
("missing value"), missing or repeated slots, CPU % outside [0, 100], an average above the maximum of
the same slot (by more than 0.01 points, rounding in the published files), and fewer than 2 slots. Values
up to 100.0001 are accepted as float noise and clipped to 100; where the average exceeds the maximum within
the tolerance, the maximum is raised to the average so that ``max_pct >= avg_pct`` holds exactly.

Speed. A CPU-% file (8004 x 100 cells) is parsed by one :func:`numpy.loadtxt` call after a cheap per-line
cell count; only when parsing fails is the file scanned cell by cell to name the bad one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from strato.core.rng import RandomStreams
from strato.errors import ConfigError, TraceFormatError
from strato.traces.csvio import load_block, read_lines, read_table, wrong_field_count
from strato.traces.spec import accepted, parse_workload_spec
from strato.vm.model import SLOT_S, VmUsage

__all__ = [
    "AZURE_2017_KINDS",
    "RC2017_VCPU_SHARES",
    "draw_vcpus",
    "load_vm_usage",
    "read_azure_2017",
    "read_public_vm_trace",
    "read_vcpus_csv",
]

AZURE_2017_KINDS = ("microsoft", "periodic")

RC2017_VCPU_SHARES: dict[int, float] = {1: 0.40, 2: 0.35, 4: 0.15, 8: 0.08, 16: 0.02}
"""Share of VMs per vCPU count used by :func:`draw_vcpus` (see there for the source)."""

# Float noise allowed above 100 % before a value is an error (it is clipped to 100).
_PCT_NOISE = 1e-4
# The published avg and max files are rounded to 4 decimals; an average may exceed the maximum of the same
# slot by this much before the pair is called inconsistent.
_AVG_OVER_MAX_TOLERANCE = 0.01
_PAIR_NAME = re.compile(r"(?P<kind>[A-Za-z0-9]+)_(?P<stat>avg|max)_(?P<rest>[^/]+?)\.csv(?P<gz>\.gz)?")
_PERIODIC_COLUMN = re.compile(r"(?P<vm>\S+)\s+(?P<hours>\d+(?:\.\d+)?)")
_VMTABLE_COLUMNS = (
    "vmid",
    "subscriptionid",
    "deploymentid",
    "vmcreated",
    "vmdeleted",
    "maxcpu",
    "avgcpu",
    "p95maxcpu",
    "vmcategory",
    "vmcorecount",
    "vmmemory",
)
_READING_COLUMNS = ("timestamp", "vmid", "mincpu", "maxcpu", "avgcpu")
_VM_CATEGORIES = {"interactive", "delay-insensitive", "unknown"}
_CORE_BUCKET = re.compile(r">\s*(\d+)")


# ------------------------------------------------------------------------------------------ VM sizes


def draw_vcpus(n: int, seed: int) -> NDArray[np.int64]:
    """``n`` VM sizes (virtual cores) drawn independently from :data:`RC2017_VCPU_SHARES`.

    The shares 1: 40 %, 2: 35 %, 4: 15 %, 8: 8 %, 16: 2 % are an approximation of the Resource Central
    characterisation (Cortez et al., SOSP 2017: most Azure VMs have 1-2 virtual cores); the exact shares
    are strato's assumption. Used when a trace has no sizes; the result depends only on ``(n, seed)``
    (the ``vm-vcpus`` stream of :class:`~strato.core.rng.RandomStreams`).
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ConfigError(f"number of VMs must be a non-negative integer, got {n!r}")
    sizes = np.array(list(RC2017_VCPU_SHARES), dtype=np.int64)
    shares = np.array(list(RC2017_VCPU_SHARES.values()), dtype=np.float64)
    rng = RandomStreams(seed).stream("vm-vcpus")
    return sizes[rng.choice(sizes.size, size=int(n), p=shares / shares.sum())]


def _drawn_source(seed: int) -> str:
    return f"drawn: RC-2017 approximation, seed {seed}"


def read_vcpus_csv(path: str | Path, vm_ids: Sequence[str]) -> NDArray[np.int64]:
    """Sizes for ``vm_ids`` from a two-column CSV ``vm_id,vcpus`` (optional header ``vm_id,...``).

    Rows for other VMs are ignored (one file may size several data sets); a VM of ``vm_ids`` without a row
    is an error naming it. Sizes are positive integers.
    """
    path = Path(path)
    table = read_table(path, columns=("vm_id", "vcpus"))
    table.check_not_empty(("vm_id",))
    sizes = table.whole("vcpus", minimum=1)
    size_of: dict[str, int] = {}
    first_row: dict[str, int] = {}
    for i, (cell, size) in enumerate(zip(table.column("vm_id"), sizes.tolist(), strict=True)):
        vm, row = cell.strip(), i + table.first_row
        if vm in size_of:
            raise TraceFormatError(
                path, f"VM {vm} is listed twice (first on row {first_row[vm]})", row=row, column="vm_id"
            )
        size_of[vm] = size
        first_row[vm] = row
    missing = [vm for vm in vm_ids if vm not in size_of]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise TraceFormatError(path, f"no vCPU count for {len(missing)} VM(s) of the data: {shown}")
    return np.array([size_of[vm] for vm in vm_ids], dtype=np.int64)


# ------------------------------------------------------------------------------------ file reading


@dataclass(frozen=True)
class _UsageFile:
    """One avg or max file: ``values[i, j]`` is on file line ``i + 2``, VM column ``columns[j]``."""

    path: Path
    columns: list[str]
    values: NDArray[np.float64]


def _read_usage_file(path: Path) -> _UsageFile:
    lines = read_lines(path)
    header = [cell.strip() for cell in lines[0].split(",")]
    columns = header[1:]
    if not any(columns):
        raise TraceFormatError(
            path,
            "header has no VM ids (expected a first cell, empty or 'rownames', then one column per VM)",
            row=1,
        )
    seen: dict[str, int] = {}
    for j, name in enumerate(columns, start=2):
        if not name:
            raise TraceFormatError(path, "empty VM id in the header", row=1, column=j)
        if name in seen:
            raise TraceFormatError(
                path, f"VM column {name!r} appears twice (columns {seen[name]} and {j})", row=1, column=j
            )
        seen[name] = j
    body = lines[1:]
    if len(body) < 2:
        raise TraceFormatError(
            path, f"{len(body)} slot(s) of data; at least 2 are needed", row=len(body) + 1 if body else 1
        )

    # A per-line comma count is cheap and names the row, which loadtxt's shape error would not.
    for i, line in enumerate(body):
        if line.count(",") + 1 != len(header):
            raise wrong_field_count(path, header, i + 2, line.count(",") + 1)

    slot_column: str | int = header[0] or 1
    try:
        data: NDArray[np.float64] = load_block(body, range(len(header)), np.float64)
    except ValueError as exc:
        _locate_bad_cell(path, body, header, slot_column)
        raise TraceFormatError(path, f"cannot parse the CPU values: {exc}") from None
    values = np.ascontiguousarray(data[:, 1:])

    _check_slots(path, data[:, 0], slot_column)
    if not np.isfinite(values).all():
        i, j = (int(v) for v in np.argwhere(~np.isfinite(values))[0])
        raise TraceFormatError(
            path, f"missing value ({body[i].split(',')[j + 1].strip()!r})", row=i + 2, column=columns[j]
        )
    bad = (values < 0) | (values > 100 + _PCT_NOISE)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise TraceFormatError(
            path,
            f"CPU {values[i, j]:g} % of VM {columns[j]} is outside [0, 100]",
            row=i + 2,
            column=columns[j],
        )
    np.minimum(values, 100.0, out=values)
    return _UsageFile(path=path, columns=columns, values=values)


def _locate_bad_cell(path: Path, body: list[str], header: list[str], slot_column: str | int) -> None:
    """Raise for the first cell that is empty or not a number (slow; only runs after loadtxt failed)."""
    for i, line in enumerate(body):
        for j, cell in enumerate(line.split(",")):
            text = cell.strip()
            column = slot_column if j == 0 else header[j]
            what = "slot number" if j == 0 else "CPU value"
            if not text:
                raise TraceFormatError(path, f"missing value: empty {what}", row=i + 2, column=column)
            try:
                float(text)
            except ValueError:
                raise TraceFormatError(
                    path, f"missing value: {what} {text!r} is not a number", row=i + 2, column=column
                ) from None


def _check_slots(path: Path, slots: NDArray[np.float64], column: str | int) -> None:
    """Slots must run 1, 2, 3, ...: name the first gap, repeat or disorder."""
    expected = np.arange(1, slots.size + 1, dtype=np.float64)
    wrong = np.flatnonzero(slots != expected)
    if wrong.size == 0:
        return
    i = int(wrong[0])
    value = float(slots[i])
    row = i + 2
    if not math.isfinite(value) or value != int(value):
        raise TraceFormatError(path, f"slot number {value:g} is not an integer", row=row, column=column)
    found = int(value)
    if i == 0:
        raise TraceFormatError(path, f"the first slot is {found}, expected 1", row=row, column=column)
    if found > i + 1:
        gap = f"slot {i + 1}" if found == i + 2 else f"slots {i + 1}-{found - 1}"
        raise TraceFormatError(
            path,
            f"missing {gap} after row {row - 1} (slot {i}); this row has slot {found}",
            row=row,
            column=column,
        )
    raise TraceFormatError(
        path,
        f"slot {found} repeats or is out of order after row {row - 1} (slot {i}); "
        "slots must run 1, 2, 3, ...",
        row=row,
        column=column,
    )


# ----------------------------------------------------------------------------------- Azure 2017


def _locate_pair(path: Path, kind: str | None) -> tuple[Path, Path, str, str]:
    """(avg file, max file, kind, set label) for a directory or either file of a pair."""
    if kind is not None and kind not in AZURE_2017_KINDS:
        raise ConfigError(f"kind must be one of {', '.join(AZURE_2017_KINDS)}, not {kind!r}")
    if path.is_dir():
        candidates = [
            (m, p)
            for p in sorted(path.iterdir())
            if (m := _PAIR_NAME.fullmatch(p.name)) and m["stat"] == "avg" and m["kind"] in AZURE_2017_KINDS
        ]
        kinds = {m["kind"] for m, _ in candidates}
        if kind is None:
            kind = next((k for k in AZURE_2017_KINDS if k in kinds), None)
        found = [p for m, p in candidates if m["kind"] == kind]
        if not found:
            wanted = (
                f"{kind}_avg_*.csv[.gz]" if kind else "microsoft_avg_*.csv[.gz] or periodic_avg_*.csv[.gz]"
            )
            raise TraceFormatError(path, f"missing file: no {wanted} here")
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise TraceFormatError(path, f"holds several {kind} sets ({names}); pass one of the files")
        avg = found[0]
    elif path.is_file():
        avg = path
    else:
        raise TraceFormatError(path, "missing file: no such file or directory")

    match = _PAIR_NAME.fullmatch(avg.name)
    if match is None:
        raise TraceFormatError(
            avg, "cannot tell the avg/max pair: expected a name like microsoft_avg_100.csv.gz"
        )
    if match["stat"] == "max":
        avg = avg.with_name(f"{match['kind']}_avg_{match['rest']}.csv{match['gz'] or ''}")
    mx = avg.with_name(f"{match['kind']}_max_{match['rest']}.csv{match['gz'] or ''}")
    for member in (avg, mx):
        if not member.is_file():
            raise TraceFormatError(member, "missing file: the other file of the avg/max pair does not exist")
    if kind is None:
        kind = match["kind"] if match["kind"] in AZURE_2017_KINDS else "microsoft"
    return avg, mx, kind, f"{match['kind']}_{match['rest']}"


def read_azure_2017(
    path: str | Path, *, kind: str | None = None, vcpus: str | Path | None = None, seed: int = 0
) -> VmUsage:
    """Read a ``<kind>_avg_<n>`` / ``<kind>_max_<n>`` pair of the 2017 Azure VM utilisation excerpt.

    ``path`` is the directory or either file of the pair (gzip or plain CSV). ``kind`` (``microsoft`` or
    ``periodic``) says how to read the VM columns; by default it is the kind in the file name, and for a
    directory ``microsoft`` when its files exist, else ``periodic``. ``vcpus`` is a ``vm_id,vcpus`` CSV
    (see :func:`read_vcpus_csv`); without it sizes come from :func:`draw_vcpus` with ``seed``.

    The two files must have the same VM ids (in any order; the avg file's order is kept) and the same
    slots. Raises :class:`TraceFormatError` naming file, row and column for anything malformed.
    """
    avg_path, max_path, kind, label = _locate_pair(Path(path), kind)
    avg = _read_usage_file(avg_path)
    mx = _read_usage_file(max_path)

    if mx.columns != avg.columns:
        avg_set, max_set = set(avg.columns), set(mx.columns)
        if avg_set != max_set:
            only_avg = [c for c in avg.columns if c not in max_set]
            if only_avg:
                raise TraceFormatError(
                    max_path, f"VM {only_avg[0]} of {avg_path.name} is not in this file (header)", row=1
                )
            only_max = next(c for c in mx.columns if c not in avg_set)
            raise TraceFormatError(
                max_path, f"VM {only_max} is not in {avg_path.name}", row=1, column=only_max
            )
        order = {c: j for j, c in enumerate(mx.columns)}
        max_values = mx.values[:, [order[c] for c in avg.columns]]
    else:
        max_values = mx.values
    n_avg, n_max = avg.values.shape[0], max_values.shape[0]
    if n_avg != n_max:
        longer, shorter = (avg_path, max_path) if n_avg > n_max else (max_path, avg_path)
        short_n = min(n_avg, n_max)
        raise TraceFormatError(
            longer,
            f"slot {short_n + 1} has no counterpart: {shorter.name} ends at slot {short_n}, "
            f"this file at slot {max(n_avg, n_max)}",
            row=short_n + 2,
        )

    over = avg.values > max_values + _AVG_OVER_MAX_TOLERANCE
    if over.any():
        i, j = (int(v) for v in np.argwhere(over)[0])
        raise TraceFormatError(
            avg_path,
            f"inconsistent pair: average {avg.values[i, j]:g} % exceeds the maximum {max_values[i, j]:g} % "
            f"of the same slot and VM in {max_path.name}",
            row=i + 2,
            column=avg.columns[j],
        )
    # Within the rounding tolerance, the maximum is raised to the average so that max >= avg exactly.
    max_values = np.maximum(max_values, avg.values)

    vm_ids, classes = _azure_2017_ids(avg_path, avg.columns, kind)
    keep, notes = _merge_repeated_vms(avg_path, avg.columns, vm_ids, classes, avg.values, max_values)
    if len(keep) < len(vm_ids):
        vm_ids = [vm_ids[j] for j in keep]
        classes = [classes[j] for j in keep]
        avg_values, max_values = avg.values[:, keep], max_values[:, keep]
    else:
        avg_values = avg.values
    if vcpus is None:
        sizes = draw_vcpus(len(vm_ids), seed)
        source = _drawn_source(seed)
    else:
        sizes = read_vcpus_csv(vcpus, vm_ids)
        source = f"file: {vcpus}"
    name = f"{avg_path.parent.name or 'azure-vm-2017'}/{label}"
    return VmUsage(
        name=f"{name} ({'; '.join(notes)})" if notes else name,
        avg_pct=avg_values,
        max_pct=max_values,
        vcpus=sizes,
        vm_ids=vm_ids,
        vm_class=classes,
        slot_s=SLOT_S,
        vcpus_source=source,
    )


def _azure_2017_ids(path: Path, columns: list[str], kind: str) -> tuple[list[str], list[str]]:
    if kind != "periodic":
        return list(columns), ["unknown"] * len(columns)
    ids: list[str] = []
    classes: list[str] = []
    for name in columns:
        match = _PERIODIC_COLUMN.fullmatch(name)
        if match is None:
            raise TraceFormatError(
                path, f"periodic column {name!r} is not '<vm id> <period hours>'", row=1, column=name
            )
        ids.append(match["vm"])
        classes.append(f"periodic-{float(match['hours']):g}h")
    return ids, classes


def _merge_repeated_vms(
    path: Path,
    columns: list[str],
    vm_ids: list[str],
    classes: list[str],
    avg: NDArray[np.float64],
    mx: NDArray[np.float64],
) -> tuple[list[int], list[str]]:
    """Columns to keep, and notes. The published periodic set lists VM 83972 twice, as ``83972 1`` and
    ``83972 24``, with identical data: one VM whose load repeats hourly and daily. It is kept once (with
    the first column's class), since placing it twice would double its load; a VM repeated with different
    data is an error."""
    first: dict[str, int] = {}
    keep: list[int] = []
    notes: list[str] = []
    for j, vm in enumerate(vm_ids):
        i = first.setdefault(vm, j)
        if i == j:
            keep.append(j)
            continue
        if not (np.array_equal(avg[:, i], avg[:, j]) and np.array_equal(mx[:, i], mx[:, j])):
            raise TraceFormatError(
                path,
                f"VM {vm} appears in columns {columns[i]!r} and {columns[j]!r} with different data",
                row=1,
                column=columns[j],
            )
        notes.append(f"VM {vm} listed twice ({columns[i]!r}, {columns[j]!r}) with the same data, kept once")
    return keep, notes


# ----------------------------------------------------------------------------- public trace (V1)


@dataclass(frozen=True)
class _VmTable:
    ids: list[str]
    index: dict[str, int]
    vcpus: NDArray[np.int64]
    classes: list[str]
    bucketed: NDArray[np.bool_]
    """Per VM: its core count was a ``>N`` bucket, read as N."""


def _read_vmtable(path: Path) -> _VmTable:
    # The published file has no header; one is tolerated.
    table = read_table(path, columns=_VMTABLE_COLUMNS)
    first = table.first_row
    ids: list[str] = []
    index: dict[str, int] = {}
    vcpus: list[int] = []
    classes: list[str] = []
    bucketed: list[bool] = []
    c_category, c_cores = _VMTABLE_COLUMNS.index("vmcategory"), _VMTABLE_COLUMNS.index("vmcorecount")
    for row, fields in enumerate(table.rows, start=first):
        cells = [cell.strip() for cell in fields]
        vm = cells[0]
        if not vm:
            raise TraceFormatError(path, "empty VM id", row=row, column="vmid")
        if vm in index:
            raise TraceFormatError(
                path, f"VM {vm} is listed twice (first on row {index[vm] + first})", row=row, column="vmid"
            )
        category = cells[c_category].lower()
        if category not in _VM_CATEGORIES:
            raise TraceFormatError(
                path,
                f"VM category {cells[c_category]!r} is not Interactive, Delay-insensitive or Unknown",
                row=row,
                column="vmcategory",
            )
        text = cells[c_cores]
        if bucket := _CORE_BUCKET.fullmatch(text):
            cores = int(bucket.group(1))
        else:
            try:
                cores = int(text)
            except ValueError:
                raise TraceFormatError(
                    path,
                    f"core count {text!r} is neither an integer nor a bucket such as '>24'",
                    row=row,
                    column="vmcorecount",
                ) from None
        if cores < 1:
            raise TraceFormatError(
                path, f"core count {cores} must be at least 1", row=row, column="vmcorecount"
            )
        index[vm] = len(ids)
        ids.append(vm)
        vcpus.append(cores)
        classes.append(category)
        bucketed.append(bucket is not None)
    if not ids:
        raise TraceFormatError(path, "no VM rows")
    return _VmTable(ids, index, np.array(vcpus, dtype=np.int64), classes, np.array(bucketed, dtype=bool))


@dataclass(frozen=True)
class _Readings:
    """Readings of one file for VMs of the vmtable: arrays over kept rows, ``row`` the file line."""

    timestamp: NDArray[np.float64]
    vm: NDArray[np.int64]
    max_pct: NDArray[np.float64]
    avg_pct: NDArray[np.float64]
    row: NDArray[np.int64]
    unknown_vms: set[str]


def _read_readings(path: Path, table: _VmTable) -> _Readings:
    readings = read_table(path, columns=_READING_COLUMNS)
    first = readings.first_row
    if not readings.rows:
        return _Readings(
            np.empty(0), np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, np.int64), set()
        )
    numbers = {name: readings.floats(name, negative=True) for name in _READING_COLUMNS if name != "vmid"}
    for name in ("mincpu", "maxcpu", "avgcpu"):
        values = numbers[name]
        bad = (values < 0) | (values > 100 + _PCT_NOISE)
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceFormatError(
                path, f"CPU {values[i]:g} % is outside [0, 100]", row=i + first, column=name
            )
        np.minimum(values, 100.0, out=values)
    over = numbers["avgcpu"] > numbers["maxcpu"] + _AVG_OVER_MAX_TOLERANCE
    if over.any():
        i = int(np.argmax(over))
        raise TraceFormatError(
            path,
            f"inconsistent row: avgcpu {numbers['avgcpu'][i]:g} exceeds maxcpu {numbers['maxcpu'][i]:g}",
            row=i + first,
            column="avgcpu",
        )
    vm_names = [name.strip() for name in readings.column("vmid")]
    vm = np.array([table.index.get(name, -1) for name in vm_names], dtype=np.int64)
    known = vm >= 0
    unknown = {name for name, k in zip(vm_names, known.tolist(), strict=True) if not k}
    return _Readings(
        timestamp=numbers["timestamp"][known],
        vm=vm[known],
        max_pct=np.maximum(numbers["maxcpu"], numbers["avgcpu"])[known],
        avg_pct=numbers["avgcpu"][known],
        row=(np.arange(len(readings.rows), dtype=np.int64) + first)[known],
        unknown_vms=unknown,
    )


def read_public_vm_trace(
    vmtable: str | Path,
    readings: Sequence[str | Path],
    *,
    start_s: float | None = None,
    days: float | None = None,
) -> VmUsage:
    """Read the public Azure VM trace (V1 layout) into a :class:`VmUsage`.

    ``vmtable`` gives each VM's size and class; ``readings`` are ``vm_cpu_readings-file-*.csv[.gz]`` files
    (all of them, or the ones covering the wanted window). Timestamps must lie on one 300 s grid starting at
    the earliest reading. The window starts at ``start_s`` (default: the earliest reading; it must be on the
    grid) and lasts ``days`` (default: up to the last reading).

    Kept VMs. Only VMs with a reading in every slot of the window are kept: oversubscription decisions are
    about VMs placed on a node for the whole window, and a VM that arrives or leaves part-way would count
    as idle (or be imputed) where it did not exist. The number dropped is reported in the result's ``name``
    (``...: kept K of N VMs; D dropped: not read in every slot``), as are readings of VMs absent from the
    vmtable, which are ignored (a filtered vmtable selects VMs).

    Sizes and classes. ``vcpus`` is ``vmcorecount``; a bucket string such as ``>24`` (the coarsest bucket
    of the published tables) is read as its bound, 24, a lower bound on the true count, and counted in the
    name. ``vm_class`` is ``vmcategory`` lower-cased: ``interactive``, ``delay-insensitive`` or ``unknown``.
    ``max_pct`` is ``maxcpu`` and ``avg_pct`` is ``avgcpu``; ``mincpu`` is validated but not kept.

    Raises :class:`TraceFormatError` naming file, row and column for bad rows (wrong cell count, missing or
    non-numeric values, CPU outside [0, 100], ``avgcpu`` above ``maxcpu``, timestamps off the grid, two
    readings of one VM in one slot); :class:`ConfigError` for a bad window or when no VM is kept.
    """
    vmtable = Path(vmtable)
    paths = [Path(p) for p in readings]
    if not paths:
        raise ConfigError("no readings files given (vm_cpu_readings-file-*.csv)")
    if days is not None and not (math.isfinite(days) and days > 0):
        raise ConfigError(f"days must be a positive number, not {days!r}")
    if start_s is not None and not math.isfinite(start_s):
        raise ConfigError(f"start_s must be a finite number, not {start_s!r}")
    table = _read_vmtable(vmtable)
    parts = [_read_readings(p, table) for p in paths]
    unknown: set[str] = set().union(*(part.unknown_vms for part in parts))
    timestamp = np.concatenate([part.timestamp for part in parts])
    if timestamp.size == 0:
        raise TraceFormatError(paths[0], "no readings for any VM of the vmtable in the readings files")
    vm = np.concatenate([part.vm for part in parts])
    avg = np.concatenate([part.avg_pct for part in parts])
    mx = np.concatenate([part.max_pct for part in parts])
    row = np.concatenate([part.row for part in parts])
    file_of = np.repeat(np.arange(len(parts)), [part.vm.size for part in parts])

    origin = float(timestamp.min())
    offset = (timestamp - origin) / SLOT_S
    off_grid = offset != np.round(offset)
    if off_grid.any():
        k = int(np.argmax(off_grid))
        raise TraceFormatError(
            paths[file_of[k]],
            f"timestamp {timestamp[k]:g} is not on the {SLOT_S} s grid of the earliest reading ({origin:g})",
            row=int(row[k]),
            column="timestamp",
        )
    slot = np.round(offset).astype(np.int64)
    last_slot = int(slot.max())

    first_slot = 0
    if start_s is not None:
        start_offset = (start_s - origin) / SLOT_S
        if start_offset != round(start_offset):
            raise ConfigError(
                f"start_s={start_s:g} is not on the {SLOT_S} s grid of the readings "
                f"(first reading {origin:g})"
            )
        first_slot = round(start_offset)
        if first_slot < 0 or first_slot > last_slot:
            raise ConfigError(
                f"start_s={start_s:g} is outside the readings ({origin:g} to {origin + last_slot * SLOT_S:g})"
            )
    if days is None:
        n_slots = last_slot + 1 - first_slot
    else:
        n_slots = round(days * 86400 / SLOT_S)
        if first_slot + n_slots > last_slot + 1:
            raise ConfigError(
                f"days={days:g} from {origin + first_slot * SLOT_S:g} s runs past the last reading "
                f"({origin + last_slot * SLOT_S:g} s)"
            )
    if n_slots < 2:
        raise ConfigError(f"the window holds {n_slots} slot(s) of {SLOT_S} s; at least 2 are needed")

    inside = (slot >= first_slot) & (slot < first_slot + n_slots)
    slot, vm, avg, mx, row, file_of = (a[inside] for a in (slot, vm, avg, mx, row, file_of))
    slot -= first_slot
    key = vm * n_slots + slot
    order = np.argsort(key, kind="stable")
    repeated = np.flatnonzero(np.diff(key[order]) == 0)
    if repeated.size:
        first, second = int(order[repeated[0]]), int(order[repeated[0] + 1])
        raise TraceFormatError(
            paths[file_of[second]],
            f"second reading of VM {table.ids[vm[second]]} at timestamp "
            f"{origin + (slot[second] + first_slot) * SLOT_S:g} "
            f"(first in {paths[file_of[first]].name}, row {row[first]})",
            row=int(row[second]),
            column="timestamp",
        )

    n_table = len(table.ids)
    count = np.bincount(vm, minlength=n_table)
    keep = np.flatnonzero(count == n_slots)
    if keep.size == 0:
        raise ConfigError(
            f"no VM has a reading in every one of the {n_slots} slots of the window; "
            "choose a shorter window (days=) or another start (start_s=)"
        )
    column_of = np.full(n_table, -1, dtype=np.int64)
    column_of[keep] = np.arange(keep.size)
    use = column_of[vm] >= 0
    avg_pct = np.empty((n_slots, keep.size), dtype=np.float64)
    max_pct = np.empty((n_slots, keep.size), dtype=np.float64)
    avg_pct[slot[use], column_of[vm[use]]] = avg[use]
    max_pct[slot[use], column_of[vm[use]]] = mx[use]

    partial = int(np.count_nonzero((count > 0) & (count < n_slots)))
    absent = int(np.count_nonzero(count == 0))
    notes = [f"kept {keep.size} of {n_table} VMs"]
    if partial or absent:
        notes.append(
            f"{partial + absent} dropped: not read in every slot ({partial} partly, {absent} not at all)"
        )
    if unknown:
        notes.append(f"readings of {len(unknown)} VMs not in {vmtable.name} ignored")
    bucketed = int(np.count_nonzero(table.bucketed[keep]))
    if bucketed:
        notes.append(f"{bucketed} core counts given as '>N' buckets read as N")
    window = f"{origin + first_slot * SLOT_S:g}s+{n_slots}x{SLOT_S}s"
    return VmUsage(
        name=f"{vmtable.parent.name or 'azure-public'}[{window}]: {'; '.join(notes)}",
        avg_pct=avg_pct,
        max_pct=max_pct,
        vcpus=table.vcpus[keep],
        vm_ids=[table.ids[i] for i in keep.tolist()],
        vm_class=[table.classes[i] for i in keep.tolist()],
        slot_s=SLOT_S,
        vcpus_source=f"data: vmcorecount of {vmtable.name}",
    )


# ------------------------------------------------------------------------------------ entry point

_PATH_OPTIONS = {
    "kind": "Azure 2017 files: microsoft or periodic",
    "vcpus": "Azure 2017 files: a vm_id,vcpus CSV",
    "seed": "Azure 2017 files: seed of the drawn VM sizes",
    "start_s": "public trace: window start, seconds",
    "days": "public trace: window length, days",
}


def load_vm_usage(spec: str, *, seed: int = 0) -> VmUsage:
    """VM usage named the way the command line's ``--data`` names it (:mod:`strato.traces.spec`).

    * ``synthetic[:vms=100,days=28,seed=0,...]``: :func:`strato.vm.synth.generate_vms` (see
      :func:`strato.vm.synth.parse_synth_vm_spec` for the keys); ``seed`` is used when the spec has none;
    * ``azure-vm-2017[:microsoft|periodic]``, or a directory holding ``microsoft_avg_*``/``periodic_avg_*``
      files (with their ``_max_`` partners), or either file of a pair: :func:`read_azure_2017`,
      ``microsoft`` preferred when both kinds are present; options ``kind=periodic,vcpus=sizes.csv,seed=3``
      (``seed`` defaults to the argument);
    * a directory holding ``vmtable.csv[.gz]`` and ``vm_cpu_readings-file-*.csv[.gz]``:
      :func:`read_public_vm_trace`, options ``start_s=0,days=7``.

    Anything else is a :class:`ConfigError` saying what is accepted.
    """
    parsed = parse_workload_spec(spec, "vm", options=_PATH_OPTIONS)
    if parsed.kind == "synthetic":
        from strato.vm.synth import generate_vms, parse_synth_vm_spec

        return generate_vms(parse_synth_vm_spec(parsed.text, seed=seed))
    assert parsed.path is not None
    path, options = parsed.path, parsed.options
    if parsed.data_set is not None and "kind" in options:
        raise ConfigError(f"--data {spec!r}: the member names the kind ({parsed.data_set.choices()})")
    vmtable = _first_existing(path, ("vmtable.csv", "vmtable.csv.gz")) if path.is_dir() else None
    has_2017 = any(_is_2017_file(p) for p in path.iterdir()) if path.is_dir() else _is_2017_file(path)
    if has_2017:
        _reject_options(spec, options, ("kind", "vcpus", "seed"), "the Azure 2017 files")
        kind = options.get("kind")
        if kind is not None and kind not in AZURE_2017_KINDS:
            raise ConfigError(f"--data {spec!r}: kind must be one of {', '.join(AZURE_2017_KINDS)}")
        return read_azure_2017(
            path,
            kind=kind,
            vcpus=options.get("vcpus"),
            seed=_option_int(spec, options, "seed", seed),
        )
    if vmtable is not None:
        _reject_options(spec, options, ("start_s", "days"), "the public VM trace")
        readings = sorted(
            (p for p in path.iterdir() if p.name.startswith("vm_cpu_readings-file-")),
            key=_readings_order,
        )
        if not readings:
            raise ConfigError(f"--data {spec!r}: {vmtable.name} but no vm_cpu_readings-file-*.csv beside it")
        start = options.get("start_s")
        days = options.get("days")
        return read_public_vm_trace(
            vmtable,
            readings,
            start_s=None if start is None else _option_float(spec, "start_s", start),
            days=None if days is None else _option_float(spec, "days", days),
        )
    raise ConfigError(
        f"--data {spec!r}: not a VM data set strato knows; accepted: {accepted('vm')}, where a path is "
        "a directory with microsoft_avg_*/microsoft_max_* or periodic_avg_*/periodic_max_* CSV files "
        "(or one of those files), or a directory with vmtable.csv and vm_cpu_readings-file-*.csv"
    )


def _reject_options(spec: str, options: Mapping[str, str], allowed: Sequence[str], what: str) -> None:
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"--data {spec!r}: option {key!r} does not apply to {what} "
                f"(options there: {', '.join(allowed)})"
            )


def _option_int(spec: str, options: Mapping[str, str], key: str, default: int) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"--data {spec!r}: {key} must be an integer, got {raw!r}") from None


def _option_float(spec: str, key: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"--data {spec!r}: {key} must be a number, got {raw!r}") from None


def _is_2017_file(path: Path) -> bool:
    match = _PAIR_NAME.fullmatch(path.name)
    return match is not None and match["kind"] in AZURE_2017_KINDS and path.is_file()


def _first_existing(directory: Path, names: Sequence[str]) -> Path | None:
    return next((directory / n for n in names if (directory / n).is_file()), None)


def _readings_order(path: Path) -> tuple[int, str]:
    # Numeric order of "file-N-of-M", so that file 10 comes after file 9.
    match = re.match(r"vm_cpu_readings-file-(\d+)", path.name)
    return (int(match.group(1)) if match else 0, path.name)
