"""Error types shared by every domain.

Bad input must produce an error a user can act on: which file, which row, which column, and what was
wrong. Every error strato raises on purpose derives from :class:`StratoError`, so the CLI can print it
cleanly and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class StratoError(Exception):
    """Base class for every error strato raises on purpose."""


class ConfigError(StratoError):
    """A bad option, policy specification, size or duration."""


class TraceFormatError(StratoError):
    """A trace file that cannot be read as the format it claims to be.

    ``row`` is the 1-based line number in the file (the header is line 1); ``column`` is the column name
    when there is one, otherwise its 1-based index.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        row: int | None = None,
        column: str | int | None = None,
    ) -> None:
        self.path = str(path)
        self.row = row
        self.column = column
        self.reason = message
        where = self.path
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!s}"
        super().__init__(f"{where}: {message}")
