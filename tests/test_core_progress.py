from __future__ import annotations

import io
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from strato.core import progress as progress_module
from strato.core.progress import ProgressBar, progress, stderr_is_tty


def numbers(n: int) -> Iterator[int]:
    # A generator has no len(), which exercises the "no total" path.
    yield from range(n)


@pytest.mark.parametrize("enabled", [False, None])
def test_progress_yields_all_items_silently_when_disabled(
    enabled: bool | None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Under pytest stderr is captured, so enabled=None must also resolve to "off".
    assert list(progress([3, 1, 2], description="items", enabled=enabled)) == [3, 1, 2]
    assert list(progress(numbers(5), description="gen", enabled=enabled)) == [0, 1, 2, 3, 4]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_disabled_counts_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(total=10, description="work", enabled=False) as bar:
        for _ in range(4):
            bar.advance()
        bar.advance(6)
    assert bar.completed == 10
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_enabled_writes_to_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    items = list(progress(range(3), description="simulating", enabled=True))
    assert items == [0, 1, 2]
    captured = capsys.readouterr()
    assert captured.out == ""
    # Off a terminal rich prints only the final state, so the count is exact.
    assert "simulating" in captured.err and "3/3" in captured.err


def test_enabled_progress_bar_context(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressBar(total=None, description="replaying", enabled=True) as bar:
        bar.advance(2)
    assert bar.completed == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "replaying" in captured.err


def live_refresh_threads() -> int:
    # rich runs one refresh thread per live display; counting only those keeps unrelated threads out.
    return sum(type(thread).__name__ == "_RefreshThread" for thread in threading.enumerate())


def no_live_display(timeout: float = 5.0) -> bool:
    # rich signals its refresh thread to stop without joining it, so give it a moment to exit.
    deadline = time.monotonic() + timeout
    while live_refresh_threads():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_progress_stops_on_break_and_error() -> None:
    # Breaking out or raising must not leave a live display running, with its refresh thread.
    assert no_live_display()
    generator = progress(range(100), description="x", enabled=True)
    for item in generator:
        if item == 3:
            assert live_refresh_threads() == 1  # the bar really was live
            break
    generator.close()
    assert no_live_display()

    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(progress(failing(), description="y", enabled=True))
    assert no_live_display()


def test_explicit_total_overrides_len(monkeypatch: pytest.MonkeyPatch) -> None:
    totals: list[int | None] = []
    original_init = ProgressBar.__init__

    def spy(self: ProgressBar, total: int | None, description: str, enabled: bool | None = None) -> None:
        totals.append(total)
        original_init(self, total, description, enabled)

    monkeypatch.setattr(ProgressBar, "__init__", spy)
    list(progress([1, 2, 3], description="a", enabled=False))
    list(progress([1, 2, 3], total=10, description="b", enabled=False))
    list(progress(numbers(2), description="c", enabled=False))
    assert totals == [3, 10, None]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class BrokenStream:
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


def test_auto_enable_follows_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert stderr_is_tty()
    assert ProgressBar(1, "x").enabled
    assert not ProgressBar(1, "x", enabled=False).enabled

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not stderr_is_tty()
    assert not ProgressBar(1, "x").enabled
    assert ProgressBar(1, "x", enabled=True).enabled

    monkeypatch.setattr(sys, "stderr", BrokenStream())
    assert not progress_module.stderr_is_tty()

    monkeypatch.setattr(sys, "stderr", None)
    assert not stderr_is_tty()
