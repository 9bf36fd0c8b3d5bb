"""CSV and gzip reading for every trace reader, with one error type.

Every reader (FaaS, LLM, VM, performance profiles) goes through :func:`read_lines` and :func:`read_table`
and parses columns with :func:`parse_floats` / :func:`parse_whole`, so a bad file is reported the same
way everywhere: a :class:`~strato.errors.TraceFormatError` naming the file, the 1-based line (the header
being line 1) and the column (its name, or its 1-based index where it has none).

Fields are split on commas (the published traces quote nothing); a line with a quote goes through the
csv module. Gzip is recognised by its magic bytes, not by the file name.
"""

from __future__ import annotations

import csv
import gzip
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from strato.errors import TraceFormatError


def _read_failure(path: Path, error: OSError) -> TraceFormatError:
    if isinstance(error, FileNotFoundError):
        return TraceFormatError(path, "missing file")
    if isinstance(error, IsADirectoryError):
        return TraceFormatError(path, "is a directory, expected a file")
    return TraceFormatError(path, f"cannot read: {error.strerror}")


def first_line(path: Path) -> str:
    """The first line only (a header to tell layouts apart), without reading the whole file."""
    try:
        with path.open("rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if gzipped else path.open("rb") as handle:
            raw = handle.readline()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise TraceFormatError(path, f"corrupt gzip data: {exc}") from None
    except OSError as exc:
        raise _read_failure(path, exc) from None
    return raw.decode("utf-8-sig", errors="replace").rstrip("\r\n")


def read_lines(path: Path) -> list[str]:
    """The file's lines without ``\\r`` and trailing blank lines; raises on a missing, unreadable,
    corrupt or empty file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _read_failure(path, exc) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise TraceFormatError(path, f"corrupt gzip data: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(path, f"not UTF-8 text (byte offset {exc.start})") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise TraceFormatError(path, "empty file")
    return lines


@dataclass(frozen=True)
class Table:
    """A CSV file split into fields: ``rows[i]`` is file line ``first_row + i``."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    first_row: int

    def index(self, column: str) -> int:
        return self.header.index(column)

    def column(self, column: str) -> list[str]:
        j = self.index(column)
        return [row[j] for row in self.rows]

    def floats(self, column: str, *, negative: bool = False) -> NDArray[np.float64]:
        return parse_floats(
            self.path, self.column(column), column, first_row=self.first_row, negative=negative
        )

    def whole(self, column: str, *, minimum: int = 0) -> NDArray[np.int64]:
        return parse_whole(self.path, self.column(column), column, first_row=self.first_row, minimum=minimum)

    def require(self, columns: Sequence[str]) -> None:
        require_columns(self.path, self.header, columns)

    def check_not_empty(self, columns: Sequence[str]) -> None:
        """Ids must not be blank."""
        for column in columns:
            j = self.index(column)
            for i, row in enumerate(self.rows):
                if not row[j].strip():
                    raise TraceFormatError(self.path, "empty id", row=i + self.first_row, column=column)


def read_table(
    path: Path,
    required: Sequence[str] = (),
    *,
    columns: Sequence[str] | None = None,
) -> Table:
    """Split a CSV file into a :class:`Table`; every row must have as many fields as the header.

    With ``columns=None`` the first line is the header and must name every ``required`` column. With
    ``columns`` the file has no header (the published VM tables) and those are the column names; a first
    line that repeats the first name is taken as a header anyway and skipped.
    """
    lines = read_lines(path)
    if columns is None:
        header = [name.strip() for name in lines[0].split(",")]
        require_columns(path, header, required)
        first_row = 2
    else:
        header = list(columns)
        first_row = 2 if lines[0].split(",", 1)[0].strip().lower() == header[0].lower() else 1
    rows: list[list[str]] = []
    for line_no, line in enumerate(lines[first_row - 1 :], start=first_row):
        # The csv module only where a field is quoted: plain splitting is several times faster.
        fields = next(csv.reader([line])) if '"' in line else line.split(",")
        if len(fields) != len(header):
            raise wrong_field_count(path, header, line_no, len(fields))
        rows.append(fields)
    return Table(path=path, header=header, rows=rows, first_row=first_row)


def require_columns(path: Path, header: Sequence[str], columns: Sequence[str]) -> None:
    """Raise naming the first of ``columns`` that the header (line 1) lacks."""
    missing = [name for name in columns if name not in header]
    if missing:
        raise TraceFormatError(
            path,
            f"missing required column(s) {', '.join(missing)} (header: {','.join(header)[:200]})",
            row=1,
            column=missing[0],
        )


def wrong_field_count(path: Path, header: Sequence[str], row: int, n_fields: int) -> TraceFormatError:
    """The error for a row whose field count differs from the header's: a short row names its first
    missing column, a long one the index of its first extra field."""
    if n_fields < len(header):
        return TraceFormatError(
            path,
            f"truncated row: {n_fields} fields, the header has {len(header)}",
            row=row,
            column=header[n_fields],
        )
    return TraceFormatError(
        path, f"row has {n_fields} fields, the header has {len(header)}", row=row, column=len(header) + 1
    )


def parse_floats(
    path: Path, values: Sequence[str], column: str | int, *, first_row: int = 2, negative: bool = False
) -> NDArray[np.float64]:
    """Finite floats (non-negative unless ``negative``), vectorised; ``values[i]`` is on line
    ``first_row + i``. Only a failure scans the cells one by one, to name the bad one."""
    try:
        parsed = np.array(values, dtype=np.float64)
    except ValueError:
        parsed = None
    if parsed is not None:
        bad = ~np.isfinite(parsed) if negative else ~np.isfinite(parsed) | (parsed < 0)
        if not bad.any():
            return parsed
        i = int(np.argmax(bad))
        text = values[i].strip()
        what = f"{text!r} is negative" if parsed[i] < 0 else f"missing value: {text!r} is not a finite number"
        raise TraceFormatError(path, what, row=first_row + i, column=column)
    for i, text in enumerate(values):
        try:
            float(text)
        except ValueError:
            what = "empty" if not text.strip() else f"{text.strip()!r} is not a number"
            raise TraceFormatError(path, f"missing value: {what}", row=first_row + i, column=column) from None
    raise AssertionError("unreachable: numpy refused a column that float() accepts")  # pragma: no cover


def parse_whole(
    path: Path, values: Sequence[str], column: str | int, *, first_row: int = 2, minimum: int = 0
) -> NDArray[np.int64]:
    """Whole numbers of at least ``minimum`` (``12`` or ``12.0``); ``values[i]`` is on line
    ``first_row + i``."""
    parsed = parse_floats(path, values, column, first_row=first_row, negative=True)
    bad = (parsed != np.round(parsed)) | (parsed < minimum)
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceFormatError(
            path,
            f"{values[i].strip()!r} is not a whole number >= {minimum}",
            row=first_row + i,
            column=column,
        )
    return parsed.astype(np.int64)


def load_block(body: Sequence[str], columns: range, dtype: type[np.generic]) -> NDArray[Any]:
    """A rectangular numeric block of ``body`` lines (the ``columns`` fields of each) in one
    :func:`numpy.loadtxt` call; raises ``ValueError`` on anything malformed, for the caller to locate the
    bad cell by a slow scan and report it."""
    with warnings.catch_warnings():
        # loadtxt warns rather than fails on some malformed input; treat that as malformed.
        warnings.simplefilter("error")
        try:
            block: NDArray[Any] = np.loadtxt(
                body, delimiter=",", dtype=dtype, usecols=columns, comments=None, ndmin=2
            )
        except Warning as warning:
            raise ValueError(str(warning)) from None
    if block.shape != (len(body), len(columns)):
        raise ValueError(f"block has shape {block.shape}, expected {(len(body), len(columns))}")
    return block
