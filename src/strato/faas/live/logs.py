"""Function logs: what instances write to stdout and stderr, kept per function, bounded, and safe to print.

Every instance writes into a pipe whose other end the gateway reads (an instance never holds a
descriptor of the server's own output). Lines are stamped with the time and the instance, control
characters are escaped (a log is printed on an operator's terminal, and escape sequences are how a
function would reach it), and the file is capped: past ``limit`` bytes it is rotated to ``NAME.log.1``,
so a function keeps at most twice its limit on disk. A function writing faster than ``rate`` bytes a
second is slowed down: the gateway stops reading its pipe, so the function blocks in its own write and
the flood costs the gateway nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import deque
from pathlib import Path

MAX_LINE = 8 * 1024
"""A partial line longer than this is written out as it is, so one line cannot grow without bound."""
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(text: str) -> str:
    return _UNSAFE.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


class FunctionLog:
    """The capped log file of one function (``state/logs/NAME.log``, 0600)."""

    def __init__(self, directory: Path, name: str, *, limit: int, rate: int) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / f"{name}.log"
        self.limit = limit
        self.rate = rate
        self.file: int | None = None
        self.size = 0

    def _open(self) -> int:
        if self.file is None:
            self.file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self.size = os.fstat(self.file).st_size
        return self.file

    def write_lines(self, source: str, lines: list[bytes]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        text = "".join(
            f"{stamp} {source} {_escape(line.decode('utf-8', errors='replace'))}\n" for line in lines
        ).encode()
        if self.size + len(text) > self.limit:
            self._rotate()
        try:
            self.size += os.write(self._open(), text[: self.limit])
        except OSError:
            # A full disk loses log lines, never the invocation that printed them.
            self.close()

    def event(self, source: str, message: str) -> None:
        """A line from the platform itself about this function (an OOM kill, a timeout)."""
        self.write_lines(f"{source} strato:", [message.encode()])

    def _rotate(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.size = 0

    def tail(self, lines: int) -> list[str]:
        """The last ``lines`` lines, the rotated file included."""
        kept: deque[str] = deque(maxlen=lines)
        for path in (self.path.with_name(self.path.name + ".1"), self.path):
            with contextlib.suppress(FileNotFoundError):
                kept.extend(path.read_text(errors="replace").splitlines())
        return list(kept)

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                os.close(self.file)
            self.file = None

    def delete(self) -> None:
        self.close()
        for path in (self.path, self.path.with_name(self.path.name + ".1")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


class InstanceLog(asyncio.Protocol):
    """The gateway's end of one instance's output pipe."""

    def __init__(self, log: FunctionLog, instance_id: str) -> None:
        self.log = log
        self.instance_id = instance_id
        self.partial = b""
        self.transport: asyncio.ReadTransport | None = None
        self.allowance = float(log.rate)
        self.refilled = time.monotonic()
        self.throttled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_LINE:
            lines.append(self.partial)
            self.partial = b""
        if lines:
            self.log.write_lines(self.instance_id, lines)
        self._throttle(len(data))

    def _throttle(self, size: int) -> None:
        now = time.monotonic()
        rate = self.log.rate
        self.allowance = min(float(rate), self.allowance + (now - self.refilled) * rate) - size
        self.refilled = now
        if self.allowance < 0 and self.transport is not None and not self.throttled:
            self.throttled = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(-self.allowance / rate, self._unthrottle)

    def _unthrottle(self) -> None:
        self.throttled = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.partial:
            self.log.write_lines(self.instance_id, [self.partial])
            self.partial = b""
        self.transport = None
