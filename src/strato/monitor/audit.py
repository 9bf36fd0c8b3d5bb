"""The audit log of group actions: who ran what, on which hosts, and what every host answered.

Storage is one SQLite file (stdlib :mod:`sqlite3`) in WAL mode with ``synchronous=FULL``, so every
committed row survives the writing process being killed (and, with FULL, a power cut). Tables are named
``audit_*`` so the file can be shared with another component's tables.

Ordering guarantees, which :class:`~strato.monitor.actions.ActionRunner` relies on:

* :meth:`AuditLog.start` commits the action row -- who, when, group, template, parameters, the rendered
  argv and the group's members *at that moment* -- before any host runs. An action that leaves no trace
  cannot have run.
* :meth:`AuditLog.record` commits each host's result as soon as that host finishes, so a crash of the
  runner loses at most the results of the hosts still running.
* :meth:`AuditLog.finish` sets the final status (``ok``, ``failed`` or ``interrupted``). A row still
  ``running`` whose process is gone means the runner died mid-action (killed, power cut): its members
  without a result may or may not have run the command.
* :meth:`AuditLog.reject` records attempts refused before anything ran (bad parameters, bad targets), with
  the error, status ``rejected``: refused attempts are audited too.

A single :class:`AuditLog` is safe to share between threads (one connection behind a lock); several
processes may open the same file (SQLite's own locking, with a short busy timeout: a write that cannot
get the lock in time raises :class:`~strato.monitor.dbfile.DatabaseBusyError`). The file is private
(see :mod:`strato.monitor.dbfile`).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from strato.errors import ConfigError, ConflictError, NotFoundError, UnavailableError
from strato.monitor.dbfile import BUSY_TIMEOUT_S, busy_error, connect, is_busy

FINAL_STATUSES = frozenset({"ok", "failed", "interrupted"})
STATUSES = FINAL_STATUSES | {"running", "rejected"}

# Audit rows keep attacker-supplied values verbatim, but not unboundedly: a web form must not be able to
# bloat the log with megabytes per refused attempt.
MAX_AUDITED_VALUE = 4096


@dataclass(frozen=True)
class HostResult:
    """What one host answered. ``exit_code`` is None when the command was killed (timeout, signal) or never
    started; ``error`` then says why. ``stdout``/``stderr`` are decoded UTF-8 (invalid bytes replaced),
    each cut at 64 KiB with a marker saying how much was dropped."""

    host: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None


@dataclass(frozen=True)
class ActionRecord:
    """One audited action. ``status``: ``running`` (in progress, or the runner died -- see the module
    docstring), ``ok`` (every member exited 0), ``failed``, ``interrupted`` (cancelled; children killed) or
    ``rejected`` (refused before anything ran; ``error`` says why). ``results`` follow ``members``' order
    and hold only the hosts that finished."""

    id: int
    who: str
    started_at: float
    finished_at: float | None
    group: str
    template: str
    params: dict[str, str]
    argv: list[str]
    members: list[str]
    status: str
    results: list[HostResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok_count(self) -> int:
        return sum(1 for result in self.results if result.ok)

    @property
    def failed_count(self) -> int:
        return sum(1 for result in self.results if not result.ok)

    @property
    def pending(self) -> list[str]:
        """Members without a result: still running, or never known (runner died or was interrupted)."""
        done = {result.host for result in self.results}
        return [member for member in self.members if member not in done]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    who TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    grp TEXT NOT NULL,
    template TEXT NOT NULL,
    params TEXT NOT NULL,
    argv TEXT NOT NULL,
    members TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS audit_actions_by_group ON audit_actions (grp, id);
CREATE TABLE IF NOT EXISTS audit_results (
    action_id INTEGER NOT NULL REFERENCES audit_actions (id),
    host TEXT NOT NULL,
    exit_code INTEGER,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    duration_s REAL NOT NULL,
    timed_out INTEGER NOT NULL,
    error TEXT,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (action_id, host)
);
"""

_ACTION_COLUMNS = "id, who, started_at, finished_at, grp, template, params, argv, members, status, error"


def _cap(value: str) -> str:
    if len(value) <= MAX_AUDITED_VALUE:
        return value
    return value[:MAX_AUDITED_VALUE] + f"...[{len(value) - MAX_AUDITED_VALUE} more characters not audited]"


class AuditLog:
    """Append-mostly audit of group actions in a SQLite file (see the module docstring for guarantees)."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path) if str(path) != ":memory:" else path
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        try:
            # Autocommit: we issue BEGIN IMMEDIATE ourselves, so a write never starts as a reader and then
            # fails to upgrade when another process writes the shared file.
            self._conn = connect(path, busy_timeout_s=busy_timeout_s)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as error:
            raise ConfigError(f"audit log {path}: cannot open as a SQLite database: {error}") from error

    # -- life cycle -------------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _write(self, sql: str, args: Sequence[Any]) -> sqlite3.Cursor:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    cursor = self._conn.execute(sql, args)
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                return cursor
            except sqlite3.Error as error:
                if is_busy(error):
                    raise busy_error(self.path, self.busy_timeout_s) from error
                if isinstance(error, sqlite3.IntegrityError):
                    raise ConflictError(f"audit log {self.path}: write refused: {error}") from error
                raise UnavailableError(f"audit log {self.path}: write failed: {error}") from error

    # -- writes -----------------------------------------------------------------------------------------
    def start(
        self,
        *,
        who: str,
        group: str,
        template: str,
        params: Mapping[str, str],
        argv: Sequence[str],
        members: Sequence[str],
    ) -> int:
        """Commit a new ``running`` action and return its id."""
        if not who:
            raise ConfigError("audit log: an action needs a non-empty 'who'")
        cursor = self._write(
            "INSERT INTO audit_actions (who, started_at, finished_at, grp, template, params, argv, members,"
            " status, error) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, 'running', NULL)",
            (
                who,
                time.time(),
                group,
                template,
                json.dumps({k: _cap(str(v)) for k, v in params.items()}),
                json.dumps(list(argv)),
                json.dumps(list(members)),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def reject(
        self,
        *,
        who: str,
        group: str,
        template: str,
        params: Mapping[str, Any],
        members: Sequence[str],
        error: str,
    ) -> int:
        """Commit an attempt that was refused before anything ran, with the reason."""
        now = time.time()
        cursor = self._write(
            "INSERT INTO audit_actions (who, started_at, finished_at, grp, template, params, argv, members,"
            " status, error) VALUES (?, ?, ?, ?, ?, ?, '[]', ?, 'rejected', ?)",
            (
                who,
                now,
                now,
                group,
                template,
                json.dumps({str(k): _cap(str(v)) for k, v in params.items()}),
                json.dumps(list(members)),
                _cap(error),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def record(self, action_id: int, result: HostResult) -> None:
        """Commit one host's result. The host must be a member, reported once, while the action runs."""
        status, members = self._status_and_members(action_id)
        if status != "running":
            raise ConflictError(f"audit log: action {action_id} is {status}, it takes no more results")
        if result.host not in members:
            raise ConfigError(f"audit log: host {result.host!r} is not a member of action {action_id}")
        try:
            self._write(
                "INSERT INTO audit_results (action_id, host, exit_code, stdout, stderr, duration_s,"
                " timed_out, error, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    action_id,
                    result.host,
                    result.exit_code,
                    result.stdout,
                    result.stderr,
                    result.duration_s,
                    int(result.timed_out),
                    result.error,
                    time.time(),
                ),
            )
        except ConflictError as error:
            raise ConflictError(
                f"audit log: action {action_id} already has a result for host {result.host!r}"
            ) from error

    def finish(self, action_id: int, status: str) -> None:
        """Set the final status of a running action."""
        if status not in FINAL_STATUSES:
            raise ConfigError(
                f"audit log: final status must be one of {sorted(FINAL_STATUSES)}, not {status!r}"
            )
        current, _ = self._status_and_members(action_id)
        if current != "running":
            raise ConflictError(f"audit log: action {action_id} is already {current}")
        self._write(
            "UPDATE audit_actions SET status = ?, finished_at = ? WHERE id = ? AND status = 'running'",
            (status, time.time(), action_id),
        )

    # -- reads ------------------------------------------------------------------------------------------
    def _status_and_members(self, action_id: int) -> tuple[str, list[str]]:
        with self._lock:
            row = self._conn.execute(
                "SELECT status, members FROM audit_actions WHERE id = ?", (action_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"audit log: no action with id {action_id}")
        return str(row[0]), list(json.loads(row[1]))

    def get(self, action_id: int) -> ActionRecord:
        """The action with this id and every result recorded so far; unknown id -> NotFoundError."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_ACTION_COLUMNS} FROM audit_actions WHERE id = ?", (action_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"audit log: no action with id {action_id}")
            records = self._assemble([row])
        return records[0]

    def list(self, *, limit: int = 50, group: str | None = None) -> builtins.list[ActionRecord]:
        """The newest ``limit`` actions (optionally of one group), newest first."""
        if limit < 0:
            raise ConfigError(f"audit log: limit must be >= 0, not {limit}")
        with self._lock:
            if group is None:
                rows = self._conn.execute(
                    f"SELECT {_ACTION_COLUMNS} FROM audit_actions ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = self._conn.execute(
                    f"SELECT {_ACTION_COLUMNS} FROM audit_actions WHERE grp = ? ORDER BY id DESC LIMIT ?",
                    (group, limit),
                ).fetchall()
            return self._assemble(rows)

    def _assemble(self, rows: Sequence[Sequence[Any]]) -> builtins.list[ActionRecord]:
        # Called with the lock held.
        if not rows:
            return []
        found: dict[int, dict[str, HostResult]] = {int(row[0]): {} for row in rows}
        placeholders = ",".join("?" * len(found))
        for result_row in self._conn.execute(
            "SELECT action_id, host, exit_code, stdout, stderr, duration_s, timed_out, error"
            f" FROM audit_results WHERE action_id IN ({placeholders})",
            tuple(found),
        ):
            found[int(result_row[0])][result_row[1]] = HostResult(
                host=result_row[1],
                exit_code=result_row[2],
                stdout=result_row[3],
                stderr=result_row[4],
                duration_s=float(result_row[5]),
                timed_out=bool(result_row[6]),
                error=result_row[7],
            )
        records = []
        for row in rows:
            members = list(json.loads(row[8]))
            results = found[int(row[0])]
            records.append(
                ActionRecord(
                    id=int(row[0]),
                    who=row[1],
                    started_at=float(row[2]),
                    finished_at=None if row[3] is None else float(row[3]),
                    group=row[4],
                    template=row[5],
                    params=dict(json.loads(row[6])),
                    argv=list(json.loads(row[7])),
                    members=members,
                    status=row[9],
                    results=[results[member] for member in members if member in results],
                    error=row[10],
                )
            )
        return records
