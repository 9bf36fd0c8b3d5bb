"""Measured GPU power of LLM inference: ``nvidia-smi`` CSV traces, per-phase energy tables, and the
figures POLCA's power model is calibrated on.

Three layers:

* :func:`read_nvidia_smi` reads the CSV that ``nvidia-smi --query-gpu=... --format=csv[,nounits] -lms N``
  writes into a :class:`GpuPowerTrace` (times, power per row, GPU per row);
* :func:`read_gpu_phases` reads a per-phase summary (one row per tokenizer / model load / inference
  phase with its runtime and GPU energy, as the energy-inference benchmark writes it) into
  :class:`GpuPhases`;
* the characterisation (:func:`align_clock`, :func:`characterise`, :func:`power_scaling`,
  :func:`largest_rise`) turns both into frozen result rows: idle and model-load levels, per-phase mean
  power from the samples and from the energy counters, the head of each phase (where the prompt is
  processed) against the rest, peak-to-mean and the largest rise within a window (POLCA's "largest spike
  in 40 s").

Both readers are strict: anything malformed is a :class:`~strato.errors.TraceFormatError` (a
``ConfigError``) naming the file, the 1-based line (the header is line 1) and the column.

Clocks. ``nvidia-smi`` prints local wall-clock time without a zone; :attr:`GpuPowerTrace.time_s` is that
wall clock read as if it were UTC (seconds since 1970-01-01 00:00 of the local clock). The phase tables
carry Unix seconds. :func:`align_clock` finds the offset between the two: on the public A100 traces it is
exactly +5 h (US Central Daylight Time) to within a second, the sub-second rest being where the sampled
power best matches the energy counters.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from strato.errors import ConfigError, TraceFormatError
from strato.traces.csvio import read_lines, require_columns, wrong_field_count

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

__all__ = [
    "A100_TDP_W",
    "ClockAlignment",
    "GpuPhases",
    "GpuPowerTrace",
    "GroupPower",
    "Level",
    "PhasePower",
    "Rise",
    "ScalingPoint",
    "TraceProfile",
    "align_clock",
    "characterise",
    "find_runs",
    "group_phases",
    "largest_rise",
    "power_scaling",
    "read_gpu_phases",
    "read_nvidia_smi",
]

A100_TDP_W = 400.0
"""Board power limit of an A100-SXM (40 and 80 GB); the traces' peaks (~470 W) pass it briefly."""

# --------------------------------------------------------------------------------------------------
# nvidia-smi CSV
# --------------------------------------------------------------------------------------------------

# Units each kind of query column may carry, as factors to the kind's base unit (W, %, MHz, MiB, C).
_UNITS: dict[str, dict[str, float]] = {
    "power": {"W": 1.0, "mW": 1e-3, "kW": 1e3},
    "percent": {"%": 1.0},
    "clock": {"MHz": 1.0, "GHz": 1e3, "kHz": 1e-3},
    "memory": {"MiB": 1.0, "GiB": 1024.0, "KiB": 1.0 / 1024.0},
    "temperature": {"C": 1.0},
}
# nvidia-smi's placeholders for a value the GPU or driver cannot give.
_NOT_AVAILABLE = re.compile(r"\[(N/A|Not Supported|Unknown Error|Insufficient Permissions|GPU is lost)\]")
_HEADER_CELL = re.compile(r"^(?P<name>[^\[\]]*?)\s*(?:\[(?P<unit>[^\[\]]*)\])?$")
_TIMESTAMP = re.compile(r"^\d{4}[/-]\d{2}[/-]\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?$")
_POWER_COLUMNS = ("power.draw", "power.draw.instant", "power.draw.average")
_GPU_ID_COLUMNS = ("index", "pci.bus_id", "uuid")
_ID_SOURCES: dict[str, Literal["index", "pci.bus_id", "uuid"]] = {
    "index": "index",
    "pci.bus_id": "pci.bus_id",
    "uuid": "uuid",
}
_MAX_INFERRED_GPUS = 16
# A burst boundary's gap must be this many times the typical gap inside a burst (real traces: ~20x).
_BURST_GAP_RATIO = 3.0


def _kind(name: str) -> str | None:
    """The kind of quantity a query column holds, ``None`` for text (name, uuid, pstate...)."""
    if name.startswith(("power.", "enforced.power.")):
        return "power"
    if name.startswith(("utilization.", "fan.speed")):
        return "percent"
    if name.startswith("clocks."):
        return "clock"
    if name.startswith("memory."):
        return "memory"
    if name.startswith("temperature."):
        return "temperature"
    return None


@dataclass(frozen=True)
class _Column:
    header: str  # as written, for messages
    name: str  # without the unit
    unit: str | None
    kind: str | None


@dataclass(frozen=True)
class GpuPowerTrace:
    """Power samples of one or more GPUs, one row per GPU per sample, in file order.

    ``time_s``: the local wall clock read as UTC (see the module docstring); non-decreasing.
    ``power_w``: board power in W, NaN where nvidia-smi printed ``[N/A]``.
    ``gpu``: the GPU of each row, ``0..gpus-1`` (:attr:`gpu_ids` maps them back to the file's ids).
    ``columns``: the other numeric query columns in their base unit (%, MHz, MiB, C; NaN for ``[N/A]``).
    ``partial_last_line``: the file ended in an unterminated line that did not parse (nvidia-smi killed
    mid-write: its output is flushed in 4 KiB blocks) and that line was left out.
    """

    time_s: FloatArray
    power_w: FloatArray
    gpu: IntArray
    gpus: int
    source: str
    gpu_ids: tuple[str, ...] = ()
    gpu_from: Literal["index", "pci.bus_id", "uuid", "bursts", "given"] = "given"
    columns: Mapping[str, FloatArray] = field(default_factory=dict)
    partial_last_line: bool = False

    def __post_init__(self) -> None:
        n = self.time_s.size
        if self.power_w.size != n or self.gpu.size != n:
            raise ConfigError(f"{self.source}: time, power and gpu arrays differ in length")
        if n == 0:
            raise ConfigError(f"{self.source}: no samples")
        if self.gpus < 1 or self.gpu.min() < 0 or self.gpu.max() >= self.gpus:
            raise ConfigError(f"{self.source}: GPU numbers must lie in 0..{self.gpus - 1}")

    def __len__(self) -> int:
        return int(self.time_s.size)

    @property
    def start_s(self) -> float:
        return float(self.time_s[0])

    @property
    def end_s(self) -> float:
        return float(self.time_s[-1])

    @property
    def sample_period_s(self) -> float:
        """Median time between two samples of the same GPU."""
        gaps = [np.diff(self.per_gpu(i)[0]) for i in range(self.gpus)]
        joined = np.concatenate(gaps)
        return float(np.median(joined)) if joined.size else math.nan

    def per_gpu(self, i: int) -> tuple[FloatArray, FloatArray]:
        """``(time_s, power_w)`` of GPU ``i`` (``0..gpus-1``), ``[N/A]`` samples left out."""
        if not 0 <= i < self.gpus:
            raise ConfigError(f"{self.source}: no GPU {i}; the trace has GPUs 0..{self.gpus - 1}")
        keep = (self.gpu == i) & np.isfinite(self.power_w)
        return self.time_s[keep], self.power_w[keep]

    def shifted(self, offset_s: float) -> GpuPowerTrace:
        """The same trace with ``offset_s`` added to every time (e.g. :attr:`ClockAlignment.offset_s`)."""
        return GpuPowerTrace(
            self.time_s + offset_s,
            self.power_w,
            self.gpu,
            self.gpus,
            self.source,
            self.gpu_ids,
            self.gpu_from,
            self.columns,
            self.partial_last_line,
        )

    def gpu_power(self, resample_hz: float = 10.0) -> tuple[FloatArray, FloatArray]:
        """``(grid_s, power_w[len(grid), gpus])``: every GPU linearly interpolated onto one grid of
        ``resample_hz`` from the latest first sample to the earliest last sample of any GPU."""
        if not (math.isfinite(resample_hz) and resample_hz > 0):
            raise ConfigError(f"resample_hz must be a positive number, got {resample_hz!r}")
        series = [self.per_gpu(i) for i in range(self.gpus)]
        empty = [i for i, (t, _) in enumerate(series) if t.size == 0]
        if empty:
            raise ConfigError(f"{self.source}: GPU {empty[0]} has no power readings")
        start = max(float(t[0]) for t, _ in series)
        end = min(float(t[-1]) for t, _ in series)
        if end < start:
            raise ConfigError(f"{self.source}: the GPUs' sample times do not overlap")
        grid = start + np.arange(math.floor((end - start) * resample_hz + 1e-9) + 1) / resample_hz
        matrix = np.column_stack([np.interp(grid, t, p) for t, p in series])
        return grid, matrix

    def row_power(self, resample_hz: float = 10.0) -> tuple[FloatArray, FloatArray]:
        """``(grid_s, total_w)``: the power of all GPUs summed on a common grid (:meth:`gpu_power`), what a
        server's or a row's meter would see of them."""
        grid, matrix = self.gpu_power(resample_hz)
        return grid, matrix.sum(axis=1)

    def window(self, start_s: float, end_s: float) -> GpuPowerTrace:
        """The rows with ``start_s <= time_s < end_s``."""
        keep = (self.time_s >= start_s) & (self.time_s < end_s)
        if not keep.any():
            raise ConfigError(f"{self.source}: no samples in [{start_s:.3f}, {end_s:.3f})")
        return GpuPowerTrace(
            self.time_s[keep],
            self.power_w[keep],
            self.gpu[keep],
            self.gpus,
            self.source,
            self.gpu_ids,
            self.gpu_from,
            {name: values[keep] for name, values in self.columns.items()},
            self.partial_last_line,
        )


def _unterminated(path: Path) -> bool:
    """Whether the file's (decompressed) text ends without a newline."""
    with path.open("rb") as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
        if not gzipped:
            handle.seek(0, 2)
            if handle.tell() == 0:
                return False
            handle.seek(-1, 2)
            return handle.read(1) not in (b"\n", b"\r")
    data = gzip.decompress(path.read_bytes())
    return bool(data) and data[-1:] not in (b"\n", b"\r")


def _parse_header(path: Path, line: str) -> list[_Column]:
    columns: list[_Column] = []
    for j, raw in enumerate(line.split(","), start=1):
        text = raw.strip()
        match = _HEADER_CELL.match(text)
        if not text or match is None:
            raise TraceFormatError(path, f"malformed header cell {text!r}", row=1, column=j)
        name, unit = match.group("name").strip(), match.group("unit")
        kind = _kind(name)
        if unit is not None:
            unit = unit.strip()
            if kind is not None and unit not in _UNITS[kind]:
                raise TraceFormatError(
                    path,
                    f"unknown unit [{unit}] for {name} (expected one of {', '.join(_UNITS[kind])})",
                    row=1,
                    column=text,
                )
        columns.append(_Column(text, name, unit, kind))
    names = [c.name for c in columns]
    if "timestamp" not in names:
        what = "no header: the first line is data" if _TIMESTAMP.match(names[0]) else "missing header"
        raise TraceFormatError(
            path,
            f"{what}; expected nvidia-smi --format=csv output with a timestamp column "
            f"(line 1: {line[:120]!r})",
            row=1,
            column="timestamp",
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TraceFormatError(path, f"column {duplicates[0]} appears twice", row=1, column=duplicates[0])
    return columns


def _parse_timestamp(text: str) -> np.datetime64:
    if not _TIMESTAMP.match(text):
        raise ValueError(f"{text!r} is not a timestamp like 2024/04/05 06:17:19.635")
    return np.datetime64(text.replace("/", "-").replace(" ", "T"), "us")


def _parse_value(text: str, column: _Column) -> float:
    """One numeric cell in the column's base unit; NaN for nvidia-smi's ``[N/A]``-like placeholders."""
    if _NOT_AVAILABLE.fullmatch(text):
        return math.nan
    parts = text.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"{text!r} is not a number" + (" with a unit" if column.unit else ""))
    number = parts[0]
    kind = column.kind
    assert kind is not None
    unit = parts[1] if len(parts) == 2 else column.unit
    factor = 1.0
    if unit is not None:
        if unit not in _UNITS[kind]:
            raise ValueError(f"unknown unit {unit!r} in {text!r} (expected one of {', '.join(_UNITS[kind])})")
        factor = _UNITS[kind][unit]
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    if value < 0 and kind != "temperature":
        raise ValueError(f"{text!r} is negative")
    return value * factor


def read_nvidia_smi(
    path: str | Path, *, gpus: int | None = None, power_column: str | None = None
) -> GpuPowerTrace:
    """Read ``nvidia-smi --query-gpu=timestamp,power.draw[,...] --format=csv[,nounits]`` output.

    Columns may come in any order; ``timestamp`` and a power column (``power.draw``, else
    ``power.draw.instant``, else ``power.draw.average``, or ``power_column``) are required. Units may be
    in the header (``power.draw [W]``), in the values (``58.67 W``), in both or in neither (``nounits``);
    a value's own unit wins and is converted (``mW``, ``kW``; ``MHz``/``GHz``; ``MiB``/``GiB``), an
    unknown one (``58.67 V``) is an error. ``[N/A]`` and the other bracketed placeholders read as NaN,
    except in ``timestamp`` and ``index``. Text columns (``name``, ``uuid``, ``pstate``...) are checked
    for their field count only.

    Which GPU each row belongs to: the ``index`` column when there is one, else ``pci.bus_id``, else
    ``uuid`` (numbered in order of first appearance). Without any of them, nvidia-smi's burst structure
    tells: every sample prints one row per GPU, in index order, a few ms apart, then waits for the
    interval (about 100 ms on the A100 traces even with ``-lms 5``). For each candidate N in 2..16 the
    row-to-row gaps are grouped by position modulo N; N is accepted when every gap at one position (the
    burst boundary) is at least 3 times the median gap at every other position (the real traces: >=
    103 ms against <= 5 ms). When no N qualifies and the gaps are all alike (fewer than 1 % below a
    third of the median or above three times it), there is one GPU; otherwise the reader refuses and
    asks for ``gpus=N``. With ``gpus=N`` (and no id column) rows are numbered by their position in the
    burst, the boundary taken at the position with the largest median gap. A last burst may be
    incomplete (nvidia-smi stopped mid-sample).
    """
    path = Path(path)
    source = str(path)
    if gpus is not None and not (isinstance(gpus, int) and 1 <= gpus <= 1024):
        raise ConfigError(f"gpus must be a whole number from 1 to 1024, got {gpus!r}")
    lines = read_lines(path)
    columns = _parse_header(path, lines[0])
    names = [c.name for c in columns]
    if power_column is None:
        power_column = next((name for name in _POWER_COLUMNS if name in names), None)
        if power_column is None:
            raise TraceFormatError(
                path,
                f"no power column: expected one of {', '.join(_POWER_COLUMNS)}",
                row=1,
                column="power.draw",
            )
    else:
        require_columns(path, names, [power_column])
        if _kind(power_column) != "power":
            raise TraceFormatError(path, f"{power_column} is not a power column", row=1, column=power_column)

    body = lines[1:]
    partial = False
    if body and _unterminated(path):
        try:
            _parse_rows(path, columns, body[-1:], first_row=len(lines))
        except TraceFormatError:
            body = body[:-1]
            partial = True
    if not body:
        raise TraceFormatError(path, "no samples after the header", row=2)
    times, numeric, text = _parse_rows(path, columns, body, first_row=2)

    t_s = (times - np.datetime64("1970-01-01T00:00:00", "us")).astype(np.int64) / 1e6
    backwards = np.flatnonzero(np.diff(t_s) < 0)
    if backwards.size:
        i = int(backwards[0]) + 1
        j = names.index("timestamp")
        now, before = (body[k].split(",")[j].strip() for k in (i, i - 1))
        raise TraceFormatError(
            path, f"timestamp goes backwards ({now} after {before})", row=i + 2, column=columns[j].header
        )
    power = numeric[power_column]
    if not np.isfinite(power).any():
        j = names.index(power_column)
        raise TraceFormatError(
            path, "no power readings: every value is [N/A]", row=2, column=columns[j].header
        )

    gpu_from: Literal["index", "pci.bus_id", "uuid", "bursts", "given"]
    id_column = next((name for name in _GPU_ID_COLUMNS if name in names), None)
    if id_column is not None:
        ids = text[id_column]
        order = list(dict.fromkeys(ids))
        if id_column == "index":
            order.sort(key=int)
        number = {gpu_id: k for k, gpu_id in enumerate(order)}
        gpu = np.array([number[gpu_id] for gpu_id in ids], dtype=np.int64)
        n_gpus = len(order)
        gpu_ids = tuple(order)
        gpu_from = _ID_SOURCES[id_column]
        if gpus is not None and gpus != n_gpus:
            raise TraceFormatError(
                path, f"gpus={gpus} but the {id_column} column names {n_gpus} GPU(s)", row=1, column=id_column
            )
    else:
        gpu, n_gpus = _burst_positions(path, t_s, gpus)
        gpu_ids = tuple(str(k) for k in range(n_gpus))
        gpu_from = "given" if gpus is not None else "bursts"

    extra = {name: values for name, values in numeric.items() if name != power_column}
    return GpuPowerTrace(t_s, power, gpu, n_gpus, source, gpu_ids, gpu_from, extra, partial)


def _parse_rows(
    path: Path, columns: list[_Column], body: Sequence[str], *, first_row: int
) -> tuple[NDArray[np.datetime64], dict[str, FloatArray], dict[str, list[str]]]:
    """The timestamps, numeric columns (base units) and id columns of ``body`` (line ``first_row`` on)."""
    header = [c.header for c in columns]
    cells: list[list[str]] = []
    for k, line in enumerate(body):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(columns):
            raise wrong_field_count(path, header, first_row + k, len(fields))
        cells.append(fields)
    times = np.empty(len(cells), dtype="datetime64[us]")
    numeric: dict[str, FloatArray] = {}
    text: dict[str, list[str]] = {}
    for j, column in enumerate(columns):
        values = [row[j] for row in cells]
        if column.name == "timestamp":
            for k, value in enumerate(values):
                try:
                    times[k] = _parse_timestamp(value)
                except ValueError as exc:
                    raise TraceFormatError(path, str(exc), row=first_row + k, column=column.header) from None
        elif column.name == "index":
            for k, value in enumerate(values):
                if not value.isdigit():
                    raise TraceFormatError(
                        path,
                        f"{value!r} is not a GPU index (a whole number)",
                        row=first_row + k,
                        column=column.header,
                    )
            text["index"] = [str(int(v)) for v in values]
        elif column.kind is not None:
            parsed = np.empty(len(values), dtype=np.float64)
            for k, value in enumerate(values):
                try:
                    parsed[k] = _parse_value(value, column)
                except ValueError as exc:
                    raise TraceFormatError(path, str(exc), row=first_row + k, column=column.header) from None
            numeric[column.name] = parsed
        elif column.name in _GPU_ID_COLUMNS:
            for k, value in enumerate(values):
                if not value or _NOT_AVAILABLE.fullmatch(value):
                    raise TraceFormatError(
                        path, f"missing GPU id {value!r}", row=first_row + k, column=column.header
                    )
            text[column.name] = values
    return times, numeric, text


def _burst_positions(path: Path, t_s: FloatArray, gpus: int | None) -> tuple[IntArray, int]:
    """Each row's GPU from its position in nvidia-smi's per-sample burst (see :func:`read_nvidia_smi`)."""
    n_rows = t_s.size
    gaps = np.diff(t_s)
    if gpus == 1 or n_rows == 1:
        return np.zeros(n_rows, dtype=np.int64), 1
    if gpus is not None:
        boundary = _boundary_position(gaps, gpus)
        if boundary is None:
            raise TraceFormatError(
                path, f"too few rows ({n_rows}) to tell bursts of {gpus} GPUs apart", row=2
            )
        return _positions(n_rows, gpus, boundary), gpus
    for n in range(2, min(_MAX_INFERRED_GPUS, n_rows // 2) + 1):
        boundary = _boundary_position(gaps, n)
        if boundary is None:
            continue
        at = np.arange(gaps.size) % n
        inside = [np.median(gaps[at == r]) for r in range(n) if r != boundary]
        if gaps[at == boundary].min() >= _BURST_GAP_RATIO * max(inside):
            return _positions(n_rows, n, boundary), n
    median = float(np.median(gaps)) if gaps.size else 0.0
    unlike = (gaps < median / _BURST_GAP_RATIO) | (gaps > median * _BURST_GAP_RATIO)
    if gaps.size == 0 or median <= 0 or np.mean(unlike) >= 0.01:
        raise TraceFormatError(
            path,
            "cannot tell which GPU each row is: no index column and no regular per-sample bursts in the "
            "timestamps; pass gpus=N or query index as well",
            row=2,
            column="timestamp",
        )
    return np.zeros(n_rows, dtype=np.int64), 1


def _boundary_position(gaps: FloatArray, n: int) -> int | None:
    """The position (modulo ``n``) whose gaps have the largest median; ``None`` without two gaps at each."""
    if gaps.size < 2 * n:
        return None
    at = np.arange(gaps.size) % n
    return int(np.argmax([np.median(gaps[at == r]) for r in range(n)]))


def _positions(n_rows: int, n: int, boundary: int) -> IntArray:
    # gap k lies between rows k and k+1, so the row after a boundary gap is GPU 0.
    return ((np.arange(n_rows) - boundary - 1) % n).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Per-phase summaries
# --------------------------------------------------------------------------------------------------

_ENERGY_COLUMN = re.compile(r"^GPU-(\d+) Energy \(mJ\)$")
_OUTPUT_COLUMNS = ("Number of Output Tokens", "Output Token Limit")
_PHASE_REQUIRED = ("Phase", "Runtime (s)", "Number of Input Tokens", "Batch Size", "Number of GPUs")
# Phases of one run follow each other within ~0.1 s; a start may be restored from its neighbours only when
# they agree on it to within this.
_REPAIR_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class GpuPhases:
    """Rows of a per-phase table (``<Model>-<system>-N.csv`` or the ``all-*-stats.csv`` aggregates).

    ``start_s`` (Unix seconds) is ``None`` for tables without a ``Timestamp`` column (the aggregates).
    ``gpu_energy_j`` is per GPU (rows x GPUs) where the table has ``GPU-k Energy (mJ)`` columns;
    ``energy_j`` is the phase's energy of all its GPUs (``GPU Energy (J)``, else the per-GPU sum).
    ``output_tokens`` is ``Number of Output Tokens`` when present, else ``Output Token Limit``
    (``output_is_limit``). ``line`` is each row's first line in the file. ``repaired`` lists the lines
    whose start was restored from their neighbours (``read_gpu_phases(..., repair_starts=True)``).
    """

    source: str
    name: tuple[str, ...]
    runtime_s: FloatArray
    input_tokens: IntArray
    output_tokens: IntArray
    batch_size: IntArray
    gpus: IntArray
    energy_j: FloatArray
    line: IntArray
    start_s: FloatArray | None = None
    gpu_energy_j: FloatArray | None = None
    iteration: IntArray | None = None
    model: tuple[str, ...] = ()
    system: tuple[str, ...] = ()
    output_is_limit: bool = False
    repaired: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.name)

    @property
    def end_s(self) -> FloatArray | None:
        return None if self.start_s is None else self.start_s + self.runtime_s

    @property
    def is_inference(self) -> NDArray[np.bool_]:
        return np.array(["inference" in n for n in self.name], dtype=bool)

    @property
    def mean_power_w(self) -> FloatArray | None:
        """Per-GPU mean power of each phase (rows x GPUs), from the per-GPU energy columns."""
        if self.gpu_energy_j is None:
            return None
        result: FloatArray = self.gpu_energy_j / self.runtime_s[:, None]
        return result

    @property
    def mean_power_per_gpu_w(self) -> FloatArray:
        """Each phase's energy over its runtime and its GPUs: the average GPU's mean power."""
        result: FloatArray = self.energy_j / self.runtime_s / self.gpus
        return result

    def index(self, name: str) -> int:
        """The row of the phase called ``name`` (the first if it repeats)."""
        try:
            return self.name.index(name)
        except ValueError:
            raise ConfigError(f"{self.source}: no phase {name!r}") from None


def read_gpu_phases(path: str | Path, *, repair_starts: bool = False) -> GpuPhases:
    """Read a per-phase table of the energy-inference benchmark.

    Required: ``Phase``, ``Runtime (s)`` (> 0), ``Number of Input Tokens``, ``Number of Output Tokens``
    or ``Output Token Limit``, ``Batch Size``, ``Number of GPUs``, and ``GPU Energy (J)`` or
    ``GPU-k Energy (mJ)`` columns (one per GPU, matching ``Number of GPUs``; where both are given their
    sum must match the total to 0.01 J). ``Timestamp`` (Unix seconds), ``Iteration``, ``Model`` and
    ``System`` are read when present. Quoted fields may span lines (the prompts are code and prose).

    Starts must not go backwards. With ``repair_starts`` a start that breaks the order is restored as
    the previous phase's end when the previous end and the next start (less this phase's runtime) agree
    to within 1 s; the public Llama-2-13B table needs this once (``713453089.6``: a lost leading digit).
    """
    path = Path(path)
    reader = csv.reader(read_lines(path))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:  # pragma: no cover - read_lines refuses empty files
        raise TraceFormatError(path, "empty file") from None
    except csv.Error as exc:
        raise TraceFormatError(path, f"malformed CSV: {exc}", row=1) from None
    require_columns(path, header, _PHASE_REQUIRED)
    output_column = next((c for c in _OUTPUT_COLUMNS if c in header), None)
    if output_column is None:
        require_columns(path, header, _OUTPUT_COLUMNS[:1])
    assert output_column is not None
    energy_columns = sorted(
        ((int(m.group(1)), name) for name in header if (m := _ENERGY_COLUMN.match(name))), key=lambda x: x[0]
    )
    if [k for k, _ in energy_columns] != list(range(len(energy_columns))):
        raise TraceFormatError(
            path,
            "GPU energy columns must be GPU-0, GPU-1, ... without gaps",
            row=1,
            column=energy_columns[0][1],
        )
    if not energy_columns and "GPU Energy (J)" not in header:
        require_columns(path, header, ["GPU Energy (J)"])

    rows: list[list[str]] = []
    lines: list[int] = []
    previous_end = 1
    try:
        for record in reader:
            start_line = previous_end + 1
            previous_end = reader.line_num
            if not record or record == [""]:
                continue
            if len(record) != len(header):
                raise wrong_field_count(path, header, start_line, len(record))
            rows.append(record)
            lines.append(start_line)
    except csv.Error as exc:
        raise TraceFormatError(path, f"malformed CSV: {exc}", row=previous_end + 1) from None
    if not rows:
        raise TraceFormatError(path, "no phases after the header", row=2)
    line = np.array(lines, dtype=np.int64)

    def cells(column: str) -> list[str]:
        j = header.index(column)
        return [row[j].strip() for row in rows]

    def floats(column: str, *, positive: bool = False) -> FloatArray:
        values = cells(column)
        out = np.empty(len(values), dtype=np.float64)
        for k, value in enumerate(values):
            try:
                number = float(value)
            except ValueError:
                what = "empty" if not value else f"{value!r} is not a number"
                raise TraceFormatError(path, f"missing value: {what}", row=lines[k], column=column) from None
            if not math.isfinite(number) or number < 0 or (positive and number == 0):
                need = "a positive number" if positive else "a finite number >= 0"
                raise TraceFormatError(path, f"{value!r} is not {need}", row=lines[k], column=column)
            out[k] = number
        return out

    def whole(column: str, *, minimum: int) -> IntArray:
        values = floats(column)
        bad = (values != np.round(values)) | (values < minimum)
        if bad.any():
            k = int(np.argmax(bad))
            raise TraceFormatError(
                path, f"{cells(column)[k]!r} is not a whole number >= {minimum}", row=lines[k], column=column
            )
        return values.astype(np.int64)

    names = tuple(cells("Phase"))
    for k, name in enumerate(names):
        if not name:
            raise TraceFormatError(path, "empty phase name", row=lines[k], column="Phase")
    runtime = floats("Runtime (s)", positive=True)
    n_gpus = whole("Number of GPUs", minimum=1)

    gpu_energy: FloatArray | None = None
    if energy_columns:
        gpu_energy = np.column_stack([floats(name) for _, name in energy_columns]) / 1000.0
        wrong = np.flatnonzero(n_gpus != len(energy_columns))
        if wrong.size:
            k = int(wrong[0])
            raise TraceFormatError(
                path,
                f"{n_gpus[k]} GPUs but {len(energy_columns)} GPU energy columns",
                row=lines[k],
                column="Number of GPUs",
            )
    if "GPU Energy (J)" in header:
        energy = floats("GPU Energy (J)")
        if gpu_energy is not None:
            off = np.abs(gpu_energy.sum(axis=1) - energy) > 0.01
            if off.any():
                k = int(np.argmax(off))
                raise TraceFormatError(
                    path,
                    f"GPU Energy (J) {energy[k]:g} differs from the per-GPU sum {gpu_energy[k].sum():g}",
                    row=lines[k],
                    column="GPU Energy (J)",
                )
    else:
        assert gpu_energy is not None
        energy = gpu_energy.sum(axis=1)

    start: FloatArray | None = None
    repaired: tuple[int, ...] = ()
    if "Timestamp" in header:
        start = floats("Timestamp", positive=True)
        start, repaired = _check_starts(path, start, runtime, lines, repair=repair_starts)

    return GpuPhases(
        source=str(path),
        name=names,
        runtime_s=runtime,
        input_tokens=whole("Number of Input Tokens", minimum=0),
        output_tokens=whole(output_column, minimum=0),
        batch_size=whole("Batch Size", minimum=1),
        gpus=n_gpus,
        energy_j=energy,
        line=line,
        start_s=start,
        gpu_energy_j=gpu_energy,
        iteration=whole("Iteration", minimum=0) if "Iteration" in header else None,
        model=tuple(cells("Model")) if "Model" in header else (),
        system=tuple(cells("System")) if "System" in header else (),
        output_is_limit=output_column == "Output Token Limit",
        repaired=repaired,
    )


def _check_starts(
    path: Path, start: FloatArray, runtime: FloatArray, lines: Sequence[int], *, repair: bool
) -> tuple[FloatArray, tuple[int, ...]]:
    start = start.copy()
    repaired: list[int] = []
    if repair:
        for k in range(1, start.size - 1):
            if start[k - 1] <= start[k] <= start[k + 1]:
                continue
            after_previous = start[k - 1] + runtime[k - 1]
            before_next = start[k + 1] - runtime[k]
            if abs(after_previous - before_next) <= _REPAIR_TOLERANCE_S and start[k - 1] <= start[k + 1]:
                start[k] = after_previous
                repaired.append(lines[k])
    backwards = np.flatnonzero(np.diff(start) < 0)
    if backwards.size:
        k = int(backwards[0]) + 1
        hint = "" if repair else " (repair_starts=True restores a start its neighbours pin down)"
        raise TraceFormatError(
            path,
            f"Timestamp goes backwards ({start[k]:.3f} after {start[k - 1]:.3f}){hint}",
            row=lines[k],
            column="Timestamp",
        )
    return start, tuple(repaired)


# --------------------------------------------------------------------------------------------------
# Characterisation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockAlignment:
    """``offset_s`` added to a trace's times puts them on the phases' Unix clock. ``zone_offset_s`` is the
    whole quarter-hour part (the time zone), ``residual_s`` the rest. ``rms_w`` is the root mean square,
    over inference phases and GPUs, of sampled mean power minus energy-counter mean power at that
    offset; ``phases`` how many phases it was computed on."""

    offset_s: float
    zone_offset_s: float
    residual_s: float
    rms_w: float
    phases: int


class _WindowMeans:
    """Mean power of each GPU's samples in time windows, by cumulative sums (one searchsorted each)."""

    def __init__(self, trace: GpuPowerTrace) -> None:
        self.series = [trace.per_gpu(i) for i in range(trace.gpus)]
        self.sums = [np.concatenate(([0.0], np.cumsum(p))) for _, p in self.series]

    def means(self, start: FloatArray, end: FloatArray, offset: float) -> tuple[FloatArray, IntArray]:
        """``(mean[phase, gpu], samples[phase, gpu])`` over ``start <= t + offset < end``; NaN where empty."""
        mean = np.full((start.size, len(self.series)), np.nan)
        count = np.zeros((start.size, len(self.series)), dtype=np.int64)
        for g, ((t, _), cs) in enumerate(zip(self.series, self.sums, strict=True)):
            lo = np.searchsorted(t, start - offset, side="left")
            hi = np.searchsorted(t, end - offset, side="left")
            n = hi - lo
            count[:, g] = n
            ok = n > 0
            mean[ok, g] = (cs[hi[ok]] - cs[lo[ok]]) / n[ok]
        return mean, count


def _covered(trace: GpuPowerTrace, start: FloatArray, end: FloatArray, offset: float) -> NDArray[np.bool_]:
    result: NDArray[np.bool_] = (start - offset >= trace.start_s) & (end - offset <= trace.end_s)
    return result


def _mismatch(
    means: _WindowMeans,
    trace: GpuPowerTrace,
    start: FloatArray,
    end: FloatArray,
    target: FloatArray,
    offset: float,
) -> tuple[float, int]:
    inside = _covered(trace, start, end, offset)
    if not inside.any():
        return math.inf, 0
    mean, count = means.means(start[inside], end[inside], offset)
    usable = (count > 0).all(axis=1)
    if usable.sum() < max(1, inside.sum() // 2):
        return math.inf, 0
    diff = mean[usable] - target[inside][usable]
    return float(np.sqrt(np.mean(diff**2))), int(usable.sum())


def _phase_targets(phases: GpuPhases, gpus: int) -> FloatArray:
    per_gpu = phases.mean_power_w
    if per_gpu is not None:
        if per_gpu.shape[1] != gpus:
            raise ConfigError(
                f"{phases.source} has energy columns for {per_gpu.shape[1]} GPU(s), the trace has {gpus}"
            )
        return per_gpu
    # Without a per-GPU split every GPU is compared with the average GPU.
    result: FloatArray = np.repeat(phases.mean_power_per_gpu_w[:, None], gpus, axis=1)
    return result


def align_clock(
    trace: GpuPowerTrace,
    phases: GpuPhases,
    *,
    max_zone_h: float = 14.0,
    zone_step_s: float = 900.0,
    residual_s: float = 2.0,
    step_s: float = 0.01,
) -> ClockAlignment:
    """The offset from the trace's local clock to the phases' Unix clock.

    First the time zone: every multiple of ``zone_step_s`` within ``max_zone_h`` hours, scored by how well
    the sampled per-GPU mean power of the inference phases it covers matches their energy-counter mean
    (RMS over phases and GPUs; at least half of the phases inside the trace must be covered). Then the
    rest, in ``step_s`` steps within ``residual_s`` of the chosen zone, by the same score.
    """
    if phases.start_s is None:
        raise ConfigError(f"{phases.source} has no Timestamp column: it cannot be aligned with a trace")
    mask = phases.is_inference
    if not mask.any():
        raise ConfigError(f"{phases.source} has no inference phases to align on")
    start = phases.start_s[mask]
    end = start + phases.runtime_s[mask]
    target = _phase_targets(phases, trace.gpus)[mask]
    means = _WindowMeans(trace)

    # Unix time minus local-as-UTC time is the zone's offset (e.g. +5 h for UTC-5).
    steps = round(max_zone_h * 3600 / zone_step_s)
    zones = [float(z) for z in np.arange(-steps, steps + 1) * zone_step_s]
    scored = [(_mismatch(means, trace, start, end, target, z)[0], z) for z in zones]
    best_score, zone = min(scored)
    if not math.isfinite(best_score):
        raise ConfigError(
            f"{phases.source}: its inference phases fall outside {trace.source} at every time-zone offset "
            f"within {max_zone_h:g} h"
        )
    fine = zone + np.arange(-residual_s, residual_s + step_s / 2, step_s)
    fits = [(*_mismatch(means, trace, start, end, target, float(o)), float(o)) for o in fine]
    rms, used, offset = min(fits, key=lambda item: (item[0], abs(item[2] - zone)))
    return ClockAlignment(offset, zone, offset - zone, rms, used)


@dataclass(frozen=True)
class Level:
    """A steady power level: per-GPU medians over a time span, their mean and sum."""

    per_gpu_w: tuple[float, ...]
    start_s: float
    end_s: float
    samples: int

    @property
    def mean_w(self) -> float:
        return float(np.mean(self.per_gpu_w))

    @property
    def total_w(self) -> float:
        return float(np.sum(self.per_gpu_w))


def _level(trace: GpuPowerTrace, start: float, end: float) -> Level:
    medians: list[float] = []
    samples = 0
    for g in range(trace.gpus):
        t, p = trace.per_gpu(g)
        keep = (t >= start) & (t < end)
        if not keep.any():
            raise ConfigError(f"{trace.source}: GPU {g} has no samples in [{start:.3f}, {end:.3f})")
        medians.append(float(np.median(p[keep])))
        samples += int(keep.sum())
    return Level(tuple(medians), start, end, samples)


@dataclass(frozen=True)
class Rise:
    """The largest increase of a power series within ``window_s``: from ``from_w`` at ``from_s`` to
    ``to_w`` at ``to_s``; ``pct_of_peak`` is the increase over the series' maximum, in %."""

    window_s: float
    rise_w: float
    pct_of_peak: float
    peak_w: float
    from_s: float
    to_s: float
    from_w: float
    to_w: float


def largest_rise(time_s: FloatArray, power_w: FloatArray, window_s: float = 40.0) -> Rise:
    """The largest ``power[j] - power[i]`` with ``i <= j`` and ``time[j] - time[i] <= window_s`` on a
    regular grid (``time_s`` evenly spaced, as :meth:`GpuPowerTrace.row_power` gives); POLCA's "largest
    spike within 40 s" when fed row power."""
    if time_s.size != power_w.size or time_s.size == 0:
        raise ConfigError("largest_rise needs equally long, non-empty time and power arrays")
    if not (math.isfinite(window_s) and window_s >= 0):
        raise ConfigError(f"window_s must be a number >= 0, got {window_s!r}")
    if time_s.size > 1:
        step = float(np.median(np.diff(time_s)))
        if step <= 0 or np.abs(np.diff(time_s) - step).max() > 1e-6 * max(1.0, step):
            raise ConfigError("largest_rise needs evenly spaced times (resample first)")
        width = math.floor(window_s / step + 1e-9) + 1
    else:
        width = 1
    # Trailing minimum over the window: pad the front with +inf so early samples see a shorter window.
    padded = np.concatenate((np.full(width - 1, np.inf), power_w))
    trailing_min = np.lib.stride_tricks.sliding_window_view(padded, width).min(axis=1)
    rise = power_w - trailing_min
    j = int(np.argmax(rise))
    window = power_w[max(0, j - width + 1) : j + 1]
    i = max(0, j - width + 1) + int(np.argmin(window))
    peak = float(power_w.max())
    return Rise(
        window_s,
        float(rise[j]),
        100.0 * float(rise[j]) / peak if peak > 0 else math.nan,
        peak,
        float(time_s[i]),
        float(time_s[j]),
        float(power_w[i]),
        float(power_w[j]),
    )


@dataclass(frozen=True)
class PhasePower:
    """One inference phase (one request: prompt, then ``output_tokens`` generated tokens).

    Per-GPU figures are the average GPU's (summed power / GPUs), in W:

    * ``trace_mean_w``: the samples' mean over the phase; ``energy_mean_w``: its energy over its runtime;
      ``trace_mean_per_gpu_w`` / ``energy_mean_per_gpu_w``: the same for each GPU;
    * ``head_*``: the first ``head_s`` of the phase, where the prompt is processed (the prefill spike
      if there is one); ``rest_*``: the remainder (decode); ``*_peak_w`` the largest summed sample / GPUs,
      ``*_mean_w`` the mean of the summed grid / GPUs;
    * ``gpu_peak_w``: the largest single reading of any one GPU in the phase, ``gpu_p90_w`` the 90th
      percentile of all GPUs' readings: where GPUs take turns (a model split by layers over GPUs runs
      them one after another), the level of the GPU at work, which the mean over GPUs dilutes.
    """

    name: str
    iteration: int | None
    start_s: float
    runtime_s: float
    input_tokens: int
    output_tokens: int
    batch_size: int
    gpus: int
    samples: int
    trace_mean_w: float
    energy_mean_w: float
    trace_mean_per_gpu_w: tuple[float, ...]
    energy_mean_per_gpu_w: tuple[float, ...]
    head_s: float
    head_peak_w: float
    head_mean_w: float
    rest_peak_w: float
    rest_mean_w: float
    gpu_peak_w: float
    gpu_p90_w: float

    @property
    def group(self) -> str:
        """The input-size group of the phase name (``start-inference-C-3`` -> ``C``)."""
        parts = self.name.rsplit("-", 2)
        return parts[-2] if len(parts) == 3 else self.name


@dataclass(frozen=True)
class TraceProfile:
    """The figures of one trace with its phase table (see :func:`characterise`). Power totals (``*_sum_w``)
    are of all GPUs together on the ``resample_hz`` grid; ``rise`` and ``rise_1s`` are over the inference
    part (first inference start to last inference end inside the trace), ``rise_whole`` over the whole
    trace; ``rise_1s`` uses 1 s means instead of the grid."""

    source: str
    gpus: int
    alignment: ClockAlignment
    idle: Level
    model_load: Level | None
    phases: tuple[PhasePower, ...]
    inference_start_s: float
    inference_end_s: float
    inference_mean_sum_w: float
    inference_peak_sum_w: float
    gpu_peak_w: float
    rise: Rise
    rise_1s: Rise
    rise_whole: Rise
    resample_hz: float

    @property
    def peak_to_mean(self) -> float:
        """Peak over mean of the summed power in the inference part, on the ``resample_hz`` grid."""
        return self.inference_peak_sum_w / self.inference_mean_sum_w

    @property
    def peak_to_mean_1s(self) -> float:
        """The same on 1 s means (what a meter averaging over a second would show)."""
        return self.rise_1s.peak_w / self.inference_mean_sum_w

    @property
    def energy_agreement(self) -> tuple[float, float]:
        """``(median, max)`` over phases of ``|trace mean - energy mean| / energy mean``, per GPU-average."""
        rel = np.array([abs(p.trace_mean_w - p.energy_mean_w) / p.energy_mean_w for p in self.phases])
        return float(np.median(rel)), float(rel.max())


def _bin_means(time_s: FloatArray, power_w: FloatArray, width_s: float) -> tuple[FloatArray, FloatArray]:
    per_bin = max(1, round(width_s / float(np.median(np.diff(time_s))))) if time_s.size > 1 else 1
    n = power_w.size // per_bin
    if n == 0:
        return time_s[:1], power_w[:1]
    means = power_w[: n * per_bin].reshape(n, per_bin).mean(axis=1)
    return time_s[: n * per_bin : per_bin], means


def characterise(
    trace: GpuPowerTrace,
    phases: GpuPhases,
    *,
    alignment: ClockAlignment | None = None,
    resample_hz: float = 10.0,
    head_fraction: float = 0.2,
    min_head_s: float = 0.5,
    rise_window_s: float = 40.0,
) -> TraceProfile:
    """Idle and model-load levels, every inference phase inside the trace, and the trace-level figures.

    * idle: per-GPU median from the trace's start to the first phase (tokenizer) start;
    * model load: per-GPU median over the ``model load`` phase (``None`` if the table has none);
    * each inference phase: :class:`PhasePower`; its head is ``max(min_head_s, head_fraction x runtime)``
      capped at half the runtime (at ~10 samples/s, 0.5 s is five samples);
    * peak-to-mean, largest rise within ``rise_window_s``: of the summed power on the ``resample_hz`` grid.
    """
    if phases.start_s is None:
        raise ConfigError(f"{phases.source} has no Timestamp column: it cannot be set against a trace")
    if alignment is None:
        alignment = align_clock(trace, phases)
    local = trace.shifted(alignment.offset_s)
    start_all = phases.start_s
    end_all = start_all + phases.runtime_s

    first = float(start_all[0])
    if first <= local.start_s:
        raise ConfigError(f"{trace.source} starts after the first phase: no idle span before it")
    idle = _level(local, local.start_s, first)
    load_rows = [k for k, n in enumerate(phases.name) if n == "model load"]
    model_load = (
        _level(local, float(start_all[load_rows[0]]), float(end_all[load_rows[0]])) if load_rows else None
    )

    grid, total = local.row_power(resample_hz)
    means = _WindowMeans(local)
    targets = _phase_targets(phases, trace.gpus)
    inference = np.flatnonzero(phases.is_inference & (start_all >= grid[0]) & (end_all <= grid[-1]))
    if inference.size == 0:
        raise ConfigError(f"{trace.source}: no inference phase of {phases.source} lies inside the trace")
    trace_means, counts = means.means(start_all[inference], end_all[inference], 0.0)
    n = trace.gpus
    rows: list[PhasePower] = []
    for r, k in enumerate(inference):
        s, e = float(start_all[k]), float(end_all[k])
        head = min(max(min_head_s, head_fraction * (e - s)), (e - s) / 2)
        in_phase = (grid >= s) & (grid < e)
        in_head = in_phase & (grid < s + head)
        in_rest = in_phase & (grid >= s + head)
        window = local.window(s, e)
        if not (in_head.any() and in_rest.any()):
            raise ConfigError(
                f"{phases.source}: phase {phases.name[k]} ({e - s:.2f} s) is too short for a "
                f"{resample_hz:g} Hz grid"
            )
        rows.append(
            PhasePower(
                name=phases.name[k],
                iteration=None if phases.iteration is None else int(phases.iteration[k]),
                start_s=s,
                runtime_s=e - s,
                input_tokens=int(phases.input_tokens[k]),
                output_tokens=int(phases.output_tokens[k]),
                batch_size=int(phases.batch_size[k]),
                gpus=n,
                samples=int(counts[r].min()),
                trace_mean_w=float(np.mean(trace_means[r])),
                energy_mean_w=float(phases.mean_power_per_gpu_w[k]),
                trace_mean_per_gpu_w=tuple(float(x) for x in trace_means[r]),
                energy_mean_per_gpu_w=tuple(float(x) for x in targets[k]),
                head_s=head,
                head_peak_w=float(total[in_head].max()) / n,
                head_mean_w=float(total[in_head].mean()) / n,
                rest_peak_w=float(total[in_rest].max()) / n,
                rest_mean_w=float(total[in_rest].mean()) / n,
                gpu_peak_w=float(np.nanmax(window.power_w)),
                gpu_p90_w=float(np.nanpercentile(window.power_w, 90)),
            )
        )
    inf_start = float(start_all[inference].min())
    inf_end = float(end_all[inference].max())
    part = (grid >= inf_start) & (grid < inf_end)
    coarse_t, coarse_p = _bin_means(grid[part], total[part], 1.0)
    return TraceProfile(
        source=trace.source,
        gpus=n,
        alignment=alignment,
        idle=idle,
        model_load=model_load,
        phases=tuple(rows),
        inference_start_s=inf_start,
        inference_end_s=inf_end,
        inference_mean_sum_w=float(total[part].mean()),
        inference_peak_sum_w=float(total[part].max()),
        gpu_peak_w=float(np.nanmax(local.power_w)),
        rise=largest_rise(grid[part], total[part], rise_window_s),
        rise_1s=largest_rise(coarse_t, coarse_p, rise_window_s),
        rise_whole=largest_rise(grid, total, rise_window_s),
        resample_hz=resample_hz,
    )


@dataclass(frozen=True)
class ScalingPoint:
    """Inference phases sharing model, system, GPUs, batch size, input and output tokens: medians over
    them of runtime, energy (all GPUs) and the average GPU's mean power (energy / runtime / GPUs)."""

    model: str
    system: str
    gpus: int
    batch_size: int
    input_tokens: int
    output_tokens: int
    phases: int
    runtime_s: float
    energy_j: float
    mean_power_w: float


def power_scaling(phases: GpuPhases, *, skip_first_iteration: bool = True) -> list[ScalingPoint]:
    """Per-phase mean power from energy and runtime, grouped as :class:`ScalingPoint` and sorted by
    model, system, GPUs, batch, output and input tokens. ``skip_first_iteration`` leaves out iteration 0
    of every group when the group has others (the very first request of a run carries a warm-up)."""
    mask = phases.is_inference
    model = phases.model or ("",) * len(phases)
    system = phases.system or ("",) * len(phases)
    power = phases.mean_power_per_gpu_w
    groups: dict[tuple[str, str, int, int, int, int], list[int]] = {}
    for k in np.flatnonzero(mask):
        key = (
            model[k],
            system[k],
            int(phases.gpus[k]),
            int(phases.batch_size[k]),
            int(phases.output_tokens[k]),
            int(phases.input_tokens[k]),
        )
        groups.setdefault(key, []).append(int(k))
    points: list[ScalingPoint] = []
    for key in sorted(groups):
        members = groups[key]
        if skip_first_iteration and phases.iteration is not None:
            later = [k for k in members if phases.iteration[k] > 0]
            members = later or members
        idx = np.array(members)
        points.append(
            ScalingPoint(
                model=key[0],
                system=key[1],
                gpus=key[2],
                batch_size=key[3],
                output_tokens=key[4],
                input_tokens=key[5],
                phases=idx.size,
                runtime_s=float(np.median(phases.runtime_s[idx])),
                energy_j=float(np.median(phases.energy_j[idx])),
                mean_power_w=float(np.median(power[idx])),
            )
        )
    return points


@dataclass(frozen=True)
class GroupPower:
    """The phases of one input-size group of a trace (``start-inference-C-0..6``): medians over its
    iterations (iteration 0 left out when there are others: the run's first request carries a warm-up)
    of the :class:`PhasePower` figures."""

    group: str
    input_tokens: int
    phases: int
    runtime_s: float
    trace_mean_w: float
    energy_mean_w: float
    head_mean_w: float
    rest_mean_w: float
    head_peak_w: float
    rest_peak_w: float
    gpu_p90_w: float
    gpu_peak_w: float


def group_phases(profile: TraceProfile) -> list[GroupPower]:
    """:class:`GroupPower` per input-size group, in order of input tokens."""
    groups: dict[str, list[PhasePower]] = {}
    for phase in profile.phases:
        groups.setdefault(phase.group, []).append(phase)
    rows: list[GroupPower] = []
    for name, members in groups.items():
        later = [p for p in members if p.iteration] or members

        def median(values: Sequence[float]) -> float:
            return float(np.median(values))

        rows.append(
            GroupPower(
                group=name,
                input_tokens=int(np.median([p.input_tokens for p in later])),
                phases=len(later),
                runtime_s=median([p.runtime_s for p in later]),
                trace_mean_w=median([p.trace_mean_w for p in later]),
                energy_mean_w=median([p.energy_mean_w for p in later]),
                head_mean_w=median([p.head_mean_w for p in later]),
                rest_mean_w=median([p.rest_mean_w for p in later]),
                head_peak_w=median([p.head_peak_w for p in later]),
                rest_peak_w=median([p.rest_peak_w for p in later]),
                gpu_p90_w=median([p.gpu_p90_w for p in later]),
                gpu_peak_w=max(p.gpu_peak_w for p in later),
            )
        )
    return sorted(rows, key=lambda row: (row.input_tokens, row.group))


def find_runs(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(nvidia-smi.csv, phase table)`` pairs below ``folder`` (the layout of the public
    ``parameter-scale-input-test`` folder: ``raw_stats/<model>/<date>/<time>/nvidia-smi.csv`` beside
    ``<Model>-<system>-<n>.csv``). Each trace is paired with the table that :func:`align_clock` fits best
    among those whose first phase starts within 15 h of the trace's first sample (any time zone); a
    trace without one is an error."""
    folder = Path(folder)
    trace_paths = sorted(folder.glob("raw_stats/**/nvidia-smi.csv"))
    if not trace_paths:
        raise ConfigError(f"{folder}: no raw_stats/**/nvidia-smi.csv below it")
    tables: list[tuple[Path, GpuPhases]] = []
    for path in sorted(folder.glob("*.csv")):
        header = [name.strip() for name in read_lines(path)[0].split(",")]
        if "Timestamp" in header and "Phase" in header:
            tables.append((path, read_gpu_phases(path, repair_starts=True)))
    pairs: list[tuple[Path, Path]] = []
    for trace_path in trace_paths:
        trace = read_nvidia_smi(trace_path)
        fits: list[tuple[float, Path]] = []
        for path, phases in tables:
            assert phases.start_s is not None
            if abs(float(phases.start_s[0]) - trace.start_s) > 15 * 3600:
                continue
            try:
                fits.append((align_clock(trace, phases).rms_w, path))
            except ConfigError:
                continue
        if not fits:
            raise ConfigError(f"{trace_path}: no phase table in {folder} lines up with it")
        pairs.append((trace_path, min(fits)[1]))
    return pairs


def _main(argv: Sequence[str]) -> int:
    """``python -m strato.traces.gpu_power [FOLDER]``: the characterisation table of every run below
    FOLDER (default: the data root's ``llm-gpu-power/plots/parameter-scale-input-test``)."""
    from strato.traces.datasets import data_root

    folder = Path(argv[0]) if argv else data_root() / "llm-gpu-power/plots/parameter-scale-input-test"
    for trace_path, table_path in find_runs(folder):
        trace = read_nvidia_smi(trace_path)
        phases = read_gpu_phases(table_path, repair_starts=True)
        p = characterise(trace, phases)
        a = p.alignment
        median_rel, max_rel = p.energy_agreement
        load = "-" if p.model_load is None else f"{p.model_load.mean_w:.1f}"
        idle = ", ".join(f"{w:.1f}" for w in p.idle.per_gpu_w)
        hz = p.resample_hz
        print(
            f"\n{trace_path.relative_to(folder)}  ({table_path.name}; "
            f"starts repaired on lines {list(phases.repaired)})\n"
            f"  GPUs {trace.gpus} ({trace.gpu_from}), {len(trace)} rows, "
            f"{trace.sample_period_s * 1000:.0f} ms between samples of a GPU, "
            f"partial last line dropped: {trace.partial_last_line}\n"
            f"  clock offset {a.offset_s:.2f} s = zone {a.zone_offset_s / 3600:+.2f} h {a.residual_s:+.2f} s "
            f"(RMS {a.rms_w:.1f} W/GPU over {a.phases} phases)\n"
            f"  idle W/GPU {idle} (mean {p.idle.mean_w:.1f}); model load W/GPU {load}\n"
            f"  inference part: mean {p.inference_mean_sum_w:.0f} W, peak {p.inference_peak_sum_w:.0f} W "
            f"(all GPUs, {hz:g} Hz), peak-to-mean {p.peak_to_mean:.2f} "
            f"({p.peak_to_mean_1s:.2f} on 1 s means), "
            f"largest single-GPU reading {p.gpu_peak_w:.1f} W\n"
            f"  largest 40 s rise: {p.rise.pct_of_peak:.1f} % of peak at {hz:g} Hz, "
            f"{p.rise_1s.pct_of_peak:.1f} % on 1 s means, {p.rise_whole.pct_of_peak:.1f} % whole trace; "
            f"{100 * p.rise.rise_w / (A100_TDP_W * trace.gpus):.1f} % of {trace.gpus} x 400 W\n"
            f"  sampled vs energy-counter phase means: median |diff| {100 * median_rel:.1f} %, "
            f"max {100 * max_rel:.1f} %"
        )
        print(
            "  grp  in_tok  n  runtime_s  mean_trace  mean_energy  head_mean  rest_mean  head_peak"
            "  rest_peak  gpu_p90  gpu_peak   (W per GPU)"
        )
        for g in group_phases(p):
            print(
                f"  {g.group:>3} {g.input_tokens:7d} {g.phases:2d} {g.runtime_s:10.2f} {g.trace_mean_w:11.1f}"
                f" {g.energy_mean_w:12.1f} {g.head_mean_w:10.1f} {g.rest_mean_w:10.1f} {g.head_peak_w:10.1f}"
                f" {g.rest_peak_w:10.1f} {g.gpu_p90_w:8.1f} {g.gpu_peak_w:9.1f}"
            )
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
