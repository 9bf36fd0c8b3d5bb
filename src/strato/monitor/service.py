"""The monitor itself: poll Ganglia, recompute groups, keep the latest state for readers.

Used by ``strato monitor serve`` (a background thread polling every interval) and by the one-shot CLI
commands (one poll). A failed poll keeps the previous snapshot and records why, so the dashboard can
show stale data and the reason side by side instead of going blank. The thread survives any failure,
expected or not: a poller that died silently would leave the server answering with stale groups forever.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from strato.errors import StratoError
from strato.monitor import ganglia
from strato.monitor.config import MonitorConfig
from strato.monitor.groups import GroupEngine, PollResult
from strato.monitor.model import Snapshot
from strato.monitor.store import GroupStore

log = logging.getLogger(__name__)


@dataclass
class PollStatus:
    polls: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    last_read_s: float = 0.0
    last_poll_s: float = 0.0
    group_errors: list[str] = field(default_factory=list)
    """Groups whose rule could not be used in the last poll (see each group's ``error``)."""
    deadline_exceeded: int = 0
    """Polls that reached their deadline before every rule was evaluated."""


class Monitor:
    def __init__(self, config: MonitorConfig, store: GroupStore | None = None) -> None:
        self.config = config
        self.store = store or GroupStore(config.db_path)
        self.engine = GroupEngine(stale_after_s=config.stale_after_s, deadline_s=config.poll_deadline_s)
        self.snapshot: Snapshot | None = None
        self.result: PollResult | None = None
        self.status = PollStatus()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> Snapshot:
        return ganglia.fetch(self.config.source, query=self.config.query)

    def poll(self) -> PollResult:
        """One poll. Raises :class:`ganglia.GangliaError` when Ganglia cannot be read; then the groups are
        still recomputed from the previous snapshot (so definitions edited meanwhile show up)."""
        started = time.perf_counter()
        deadline_from = self.engine.clock()
        self.status.polls += 1
        try:
            snapshot = self.read()
        except ganglia.GangliaError as error:
            self.failed(str(error))
            if self.snapshot is not None:
                self._recompute(self.snapshot)
            raise
        read_s = time.perf_counter() - started
        result = self._recompute(snapshot, deadline_from)
        if result.deadline_exceeded:
            self.status.deadline_exceeded += 1
        self.status.last_success_at = snapshot.taken_at
        self.status.last_error = None
        self.status.last_read_s = read_s
        self.status.last_poll_s = time.perf_counter() - started
        return result

    def failed(self, reason: str) -> None:
        self.status.failures += 1
        self.status.last_error = reason
        self.status.last_error_at = time.time()

    def _recompute(self, snapshot: Snapshot, started: float | None = None) -> PollResult:
        groups = self.store.list()
        with self._lock:
            result = self.engine.update(snapshot, groups, started=started)
            self.snapshot = snapshot
            self.result = result
            self.status.group_errors = result.errors
        return result

    def refresh_groups(self) -> None:
        """Recompute membership now from the last snapshot (after an edit), without reading Ganglia."""
        if self.snapshot is not None:
            self._recompute(self.snapshot)

    # ---- background polling ------------------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ganglia-poller", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            # A failure is recorded in status and shown on the dashboard and in /api/status.
            try:
                self.poll()
            except ganglia.GangliaError:
                pass
            except Exception as error:  # recorded and shown; polling goes on
                if not isinstance(error, StratoError):
                    log.exception("poll failed")
                self.failed(str(error) if isinstance(error, StratoError) else f"poll failed: {error!r}")
            next_at += self.config.interval_s
            now = time.monotonic()
            if next_at < now:  # a slow poll: skip missed ticks instead of polling back to back
                next_at = now + self.config.interval_s
            self._stop.wait(next_at - now)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
