"""Error types shared by every domain.

Bad input must produce an error a user can act on: which file, which row, which column, and what was
wrong. Every error strato raises on purpose derives from :class:`StratoError`, so the CLI can print it
cleanly instead of a traceback. Four kinds, each answered the same way everywhere:

========================  ==========  ====  ==================================================
class                     meaning     exit  HTTP
========================  ==========  ====  ==================================================
:class:`ConfigError`      bad input   2     400 (also any other StratoError)
:class:`NotFoundError`    not found   3     404: a named thing (group, action, host) is not there
:class:`ConflictError`    conflict    4     409: it clashes with what exists (a duplicate name)
:class:`UnavailableError` unavailable 5     503: a service or file strato needs cannot be used
                                                 now (a locked database, an unreachable daemon)
========================  ==========  ====  ==================================================

Each class carries its ``exit_code`` and ``http_status``; :func:`strato.cli.common.friendly_errors` and
the monitor server's exception handler (:mod:`strato.monitor.server`) read them.
"""

from __future__ import annotations

from pathlib import Path


class StratoError(Exception):
    """Base class for every error strato raises on purpose."""

    exit_code = 2
    http_status = 400


class ConfigError(StratoError):
    """Bad input: an option, policy specification, size, duration, rule or request value. Trying again
    with the same input fails the same way."""


class NotFoundError(StratoError):
    """A thing named by the caller (a group, an audited action, a host) does not exist (any more)."""

    exit_code = 3
    http_status = 404


class ConflictError(StratoError):
    """The request clashes with the current state: creating what already exists, finishing what is done."""

    exit_code = 4
    http_status = 409


class UnavailableError(StratoError):
    """Something strato depends on cannot be used right now (a database locked by another process, a
    daemon or scheduler that does not answer, a failed write); the same request may work later.

    ``retry_after_s``, when known, is how long to wait before trying again."""

    exit_code = 5
    http_status = 503

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TraceFormatError(ConfigError):
    """A trace file that cannot be read as the format it claims to be (bad input).

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
