"""Opening the monitor's SQLite file: private permissions, a short busy timeout, clear errors.

The file holds the group rules, which decide where actions run, and the audit log, which holds every
command's output. Whoever can write it can add a rule or rewrite the audit; whoever can read it can read
the output. So it is created ``0600`` in directories created ``0700``, whatever the umask (SQLite gives
its ``-wal`` and ``-shm`` side files the database's mode). An existing file that other users may read or
write is tightened to ``0600`` with a warning on stderr; a file that belongs to another user, or that
sits in a directory every user may write (without the sticky bit, so anyone could replace it), is
refused.

Locks: another process holding the write lock (a CLI command mid-write, an open ``sqlite3`` shell) makes
a write wait at most ``busy_timeout_s`` and then fail with :class:`DatabaseBusyError`, which the server
answers with 503, instead of holding a request for SQLite's usual minutes or Python's 5 s default.
Readers are not blocked by a writer (WAL).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

from strato.errors import ConfigError, UnavailableError

BUSY_TIMEOUT_S = 2.0
# What a refused client is told to wait: another process's write is usually over by then.
RETRY_AFTER_S = 2.0
SIDE_FILES = ("-wal", "-shm", "-journal")

log = logging.getLogger(__name__)


class DatabaseBusyError(UnavailableError):
    """Another process held the monitor database's write lock for longer than the busy timeout."""


def is_busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` is SQLite's "database is locked" (SQLITE_BUSY) or "table is locked"."""
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def busy_error(path: str | Path, waited_s: float) -> DatabaseBusyError:
    return DatabaseBusyError(
        f"the monitor database {path} is locked by another process (waited {waited_s:g} s for its write "
        "lock); try again, or find what holds it open",
        retry_after_s=RETRY_AFTER_S,
    )


def connect(path: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection (shared across threads, autocommit) to the database at ``path``, made private first."""
    if str(path) != ":memory:":
        _private(Path(path))
    return sqlite3.connect(str(path), timeout=busy_timeout_s, check_same_thread=False, isolation_level=None)


def _private(path: Path) -> None:
    _make_directories(path.parent)
    folder = path.parent.stat()
    if folder.st_mode & stat.S_IWOTH and not folder.st_mode & stat.S_ISVTX:
        raise ConfigError(
            f"{path.parent} is writable by every user, who could replace the monitor database; "
            f"run chmod o-w {path.parent} or choose another --db"
        )
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise ConfigError(f"{path}: cannot open the monitor database: {error.strerror}") from None
    try:
        _check(path, descriptor)
    finally:
        os.close(descriptor)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        try:
            descriptor = os.open(side, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # absent (the usual case), or a symbolic link, which SQLite will not follow either
        try:
            _check(side, descriptor)
        finally:
            os.close(descriptor)


def _make_directories(folder: Path) -> None:
    # Path.mkdir(parents=True) gives the parents the umask's mode, not 0700.
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for item in reversed(missing):
        try:
            item.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as error:
            raise ConfigError(
                f"{item}: cannot create the monitor database's directory: {error.strerror}"
            ) from None


def _check(path: Path, descriptor: int) -> None:
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file; refusing it as the monitor database")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"{path} belongs to another user (uid {info.st_uid}), who controls the groups and the audit "
            "log it holds; refusing it (move it away, or run as that user)"
        )
    loose = stat.S_IMODE(info.st_mode) & 0o077
    if loose:
        os.fchmod(descriptor, 0o600)
        log.warning(
            "%s was open to other users (mode %o); changed it to 600",
            path,
            stat.S_IMODE(info.st_mode),
        )
