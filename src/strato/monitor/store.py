"""Group definitions in SQLite: the only place a group lives (gmond's configuration is never touched).

A group is a name, an optional rule (:mod:`strato.monitor.rules`) and explicit members; a host is a
member when it is listed or the rule matches it, so one host can sit in any number of groups. Every
change is one transaction; readers (the poller) see either the old or the new definition. The action
audit (:mod:`strato.monitor.audit`) can share the same file: tables are prefixed per component.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from strato.errors import ConfigError
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


class GroupStore:
    """CRUD on group definitions; safe to share between the poller thread and request handlers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            raise ConfigError(f"{path}: not a usable strato monitor database ({error})") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def _write(self, statements: list[tuple[str, tuple[object, ...]]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def create(
        self, name: str, *, rule: str | None = None, members: Iterable[str] = (), description: str = ""
    ) -> GroupDef:
        check_group_name(name)
        if rule is not None:
            parse_rule(rule)
        hosts = _check_hosts(members)
        if self.exists(name):
            raise ConfigError(f"group {name!r} already exists")
        now = time.time()
        self._write(
            [
                (
                    "INSERT INTO group_defs (name, rule, description, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (name, rule, description, now, now),
                )
            ]
            + [("INSERT OR IGNORE INTO group_members VALUES (?, ?)", (name, host)) for host in hosts]
        )
        return self.get(name)

    def exists(self, name: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM group_defs WHERE name = ?", (name,)).fetchone() is not None

    def _require(self, name: str) -> None:
        if not self.exists(name):
            known = ", ".join(group.name for group in self.list()) or "none yet"
            raise ConfigError(f"no group named {name!r} (groups: {known})")

    def set_rule(self, name: str, rule: str | None) -> GroupDef:
        self._require(name)
        if rule is not None:
            parse_rule(rule)
        self._write(
            [("UPDATE group_defs SET rule = ?, updated_at = ? WHERE name = ?", (rule, time.time(), name))]
        )
        return self.get(name)

    def add_members(self, name: str, hosts: Iterable[str]) -> GroupDef:
        self._require(name)
        checked = _check_hosts(hosts)
        self._write(
            [("INSERT OR IGNORE INTO group_members VALUES (?, ?)", (name, host)) for host in checked]
            + [("UPDATE group_defs SET updated_at = ? WHERE name = ?", (time.time(), name))]
        )
        return self.get(name)

    def remove_members(self, name: str, hosts: Iterable[str]) -> GroupDef:
        self._require(name)
        group = self.get(name)
        checked = _check_hosts(hosts)
        missing = sorted(set(checked) - set(group.members))
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not listed in group {name!r} "
                "(hosts that join by its rule leave when the rule stops matching)"
            )
        self._write(
            [
                ("DELETE FROM group_members WHERE group_name = ? AND host = ?", (name, host))
                for host in checked
            ]
            + [("UPDATE group_defs SET updated_at = ? WHERE name = ?", (time.time(), name))]
        )
        return self.get(name)

    def delete(self, name: str) -> None:
        self._require(name)
        self._write([("DELETE FROM group_defs WHERE name = ?", (name,))])

    def get(self, name: str) -> GroupDef:
        for group in self.list():
            if group.name == name:
                return group
        self._require(name)
        raise AssertionError  # unreachable: _require raised

    def list(self) -> list[GroupDef]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, rule, description, created_at, updated_at FROM group_defs ORDER BY name"
            ).fetchall()
            member_rows = self._db.execute(
                "SELECT group_name, host FROM group_members ORDER BY group_name, host"
            ).fetchall()
        members: dict[str, list[str]] = {}
        for group_name, host in member_rows:
            members.setdefault(group_name, []).append(host)
        return [
            GroupDef(name, rule, tuple(members.get(name, ())), description, created, updated)
            for name, rule, description, created, updated in rows
        ]
