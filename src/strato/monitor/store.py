"""Group definitions in SQLite: the only place a group lives (gmond's configuration is never touched).

A group is a name, an optional rule (:mod:`strato.monitor.rules`) and explicit members; a host is a
member when it is listed or the rule matches it, so one host can sit in any number of groups. Every
change is one transaction; readers (the poller) see either the old or the new definition. The action
audit (:mod:`strato.monitor.audit`) can share the same file: tables are prefixed per component.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from strato.errors import ConfigError, ConflictError, NotFoundError
from strato.monitor.dbfile import BUSY_TIMEOUT_S, busy_error, connect, is_busy
from strato.monitor.rules import parse_rule

GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HOST_NAME = re.compile(r"[^\s<>&\"']{1,255}")


def default_db_path() -> Path:
    """``$STRATO_MONITOR_DB``, else ``$XDG_DATA_HOME/strato/monitor.db`` (``~/.local/share``)."""
    if env := os.environ.get("STRATO_MONITOR_DB"):
        return Path(env)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "strato" / "monitor.db"


@dataclass(frozen=True)
class GroupDef:
    name: str
    rule: str | None
    members: tuple[str, ...]
    """Hosts listed explicitly, whatever the rule says."""
    description: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS group_defs (
    name TEXT PRIMARY KEY,
    rule TEXT,
    description TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_name TEXT NOT NULL REFERENCES group_defs(name) ON DELETE CASCADE,
    host TEXT NOT NULL,
    PRIMARY KEY (group_name, host)
);
"""


def check_group_name(name: str) -> str:
    if not GROUP_NAME.fullmatch(name):
        raise ConfigError(
            f"group name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def _check_hosts(hosts: Iterable[str]) -> list[str]:
    checked = []
    for host in hosts:
        if not HOST_NAME.fullmatch(host):
            raise ConfigError(f"host name {host!r} is empty, too long or has spaces, quotes or <>&")
        checked.append(host)
    return checked


class GroupNotFoundError(NotFoundError):
    """No group has that name (any more)."""


class GroupExistsError(ConflictError):
    """A group of that name already exists."""


class GroupStore:
    """CRUD on group definitions; safe to share between the poller thread and request handlers.

    Every change is one ``BEGIN IMMEDIATE`` transaction that checks, writes and reads the result back, so
    two clients editing the same group at once (threads here, or other processes on the same file) are
    serialised: each sees the other's change whole, or a clear :class:`GroupExistsError` /
    :class:`GroupNotFoundError`. A write that waits longer than ``busy_timeout_s`` for another process's
    lock raises :class:`~strato.monitor.dbfile.DatabaseBusyError`.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        try:
            self._db = connect(path, busy_timeout_s=busy_timeout_s)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            if is_busy(error):
                raise busy_error(path, busy_timeout_s) from None
            raise ConfigError(f"{path}: not a usable strato monitor database ({error})") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.OperationalError as error:
                if is_busy(error):
                    raise busy_error(self.path, self.busy_timeout_s) from None
                raise
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(error, sqlite3.OperationalError) and is_busy(error):
                    raise busy_error(self.path, self.busy_timeout_s) from None
                raise

    def create(
        self, name: str, *, rule: str | None = None, members: Iterable[str] = (), description: str = ""
    ) -> GroupDef:
        check_group_name(name)
        if rule is not None:
            parse_rule(rule)
        hosts = _check_hosts(members)
        now = time.time()
        with self._transaction(write=True) as db:
            if _row(db, name) is not None:
                raise GroupExistsError(f"group {name!r} already exists")
            db.execute(
                "INSERT INTO group_defs (name, rule, description, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, rule, description, now, now),
            )
            db.executemany("INSERT OR IGNORE INTO group_members VALUES (?, ?)", [(name, h) for h in hosts])
            return _read(db, name)

    def exists(self, name: str) -> bool:
        with self._transaction(write=False) as db:
            return _row(db, name) is not None

    def set_rule(self, name: str, rule: str | None) -> GroupDef:
        if rule is not None:
            parse_rule(rule)
        with self._transaction(write=True) as db:
            _require(db, name)
            db.execute(
                "UPDATE group_defs SET rule = ?, updated_at = ? WHERE name = ?", (rule, time.time(), name)
            )
            return _read(db, name)

    def add_members(self, name: str, hosts: Iterable[str]) -> GroupDef:
        checked = _check_hosts(hosts)
        with self._transaction(write=True) as db:
            _require(db, name)
            db.executemany("INSERT OR IGNORE INTO group_members VALUES (?, ?)", [(name, h) for h in checked])
            db.execute("UPDATE group_defs SET updated_at = ? WHERE name = ?", (time.time(), name))
            return _read(db, name)

    def remove_members(self, name: str, hosts: Iterable[str]) -> GroupDef:
        checked = _check_hosts(hosts)
        with self._transaction(write=True) as db:
            _require(db, name)
            missing = sorted(set(checked) - set(_read(db, name).members))
            if missing:
                raise ConfigError(
                    f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not listed in group "
                    f"{name!r} (hosts that join by its rule leave when the rule stops matching)"
                )
            db.executemany(
                "DELETE FROM group_members WHERE group_name = ? AND host = ?", [(name, h) for h in checked]
            )
            db.execute("UPDATE group_defs SET updated_at = ? WHERE name = ?", (time.time(), name))
            return _read(db, name)

    def delete(self, name: str) -> None:
        with self._transaction(write=True) as db:
            _require(db, name)
            db.execute("DELETE FROM group_defs WHERE name = ?", (name,))

    def get(self, name: str) -> GroupDef:
        with self._transaction(write=False) as db:
            _require(db, name)
            return _read(db, name)

    def list(self) -> list[GroupDef]:
        # One read transaction: the definitions and their members come from the same moment.
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT name, rule, description, created_at, updated_at FROM group_defs ORDER BY name"
            ).fetchall()
            member_rows = db.execute(
                "SELECT group_name, host FROM group_members ORDER BY group_name, host"
            ).fetchall()
        members: dict[str, list[str]] = {}
        for group_name, host in member_rows:
            members.setdefault(group_name, []).append(host)
        return [
            GroupDef(name, rule, tuple(members.get(name, ())), description, created, updated)
            for name, rule, description, created, updated in rows
        ]


def _row(db: sqlite3.Connection, name: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = db.execute(
        "SELECT name, rule, description, created_at, updated_at FROM group_defs WHERE name = ?", (name,)
    ).fetchone()
    return row


def _require(db: sqlite3.Connection, name: str) -> None:
    if _row(db, name) is None:
        names = [row[0] for row in db.execute("SELECT name FROM group_defs ORDER BY name")]
        raise GroupNotFoundError(f"no group named {name!r} (groups: {', '.join(names) or 'none yet'})")


def _read(db: sqlite3.Connection, name: str) -> GroupDef:
    row = _row(db, name)
    assert row is not None  # callers hold the transaction in which they checked it
    _, rule, description, created, updated = row
    hosts = [
        host
        for (host,) in db.execute(
            "SELECT host FROM group_members WHERE group_name = ? ORDER BY host", (name,)
        )
    ]
    return GroupDef(name, rule, tuple(hosts), str(description), float(created), float(updated))
