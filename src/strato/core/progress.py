"""Progress bars for long loops, on stderr and only where a person is watching.

By default a bar is shown only when stderr is a terminal, so test logs, CI output and piped
``--json`` results stay free of control characters; ``enabled=True`` or ``False`` overrides that. When
disabled nothing from :mod:`rich` is created and nothing is written.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressBar", "progress", "stderr_is_tty"]

T = TypeVar("T")


def stderr_is_tty() -> bool:
    """Whether ``sys.stderr`` (as it is now, not at import time) is an interactive terminal."""
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        # Replaced or closed streams (some test runners, daemons) may lack isatty or refuse it.
        return False


def _make_progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        # Look up sys.stderr now so that redirections made after import (pytest, contextlib) are honoured.
        console=Console(file=sys.stderr),
    )


class ProgressBar:
    """A progress bar as a context manager, for loops that are not a single iterable.

    >>> with ProgressBar(total=3, description="simulating", enabled=False) as bar:
    ...     for _ in range(3):
    ...         bar.advance()
    >>> bar.completed
    3
    """

    def __init__(self, total: int | None, description: str, enabled: bool | None = None) -> None:
        self.total = total
        self.description = description
        self.enabled = stderr_is_tty() if enabled is None else bool(enabled)
        self.completed = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            self._progress = _make_progress()
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        """Record ``n`` more units of work as done."""
        self.completed += n
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    description: str,
    enabled: bool | None = None,
) -> Generator[T, None, None]:
    """Yield every item of ``iterable`` unchanged while showing a progress bar on stderr.

    ``total`` defaults to ``len(iterable)`` where it has one; otherwise the bar shows a count without an
    end. The bar stops when the loop ends or raises, leaving its final state on screen; after a ``break``
    it stops when the generator is closed or garbage-collected (call ``.close()`` to stop it at once).
    """
    if total is None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with ProgressBar(total, description, enabled) as bar:
        for item in iterable:
            yield item
            bar.advance()
