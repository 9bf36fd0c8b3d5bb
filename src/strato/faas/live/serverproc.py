"""A ``strato faas serve`` child process, started and stopped for sure: used by bench, replay and tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from strato.errors import StratoError
from strato.faas.live.client import FaasClient


class ServerProcess:
    """A ``strato faas serve`` child with its own state directory, stopped for sure by :meth:`stop`."""

    def __init__(
        self,
        root: Path,
        *,
        args: list[str],
        describe: str = "strato faas server",
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.root = root
        self.extra_env = dict(env or {})
        self.wrapper = list(wrapper or [])
        """A command the server runs under (e.g. ``unshare --mount ...``); its pid is then the wrapper's."""
        self.state_dir = root / "state"
        self.log_path = root / "server.log"
        self.args = ["--host", "127.0.0.1", "--port", "0", "--state-dir", str(self.state_dir), *args]
        self.describe = describe
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = ""

    @classmethod
    def for_backend(
        cls,
        root: Path,
        *,
        backend: str,
        spawn: str,
        policy: str,
        sandbox: bool,
        extra: list[str] | None = None,
    ) -> ServerProcess:
        args = ["--backend", backend, "--spawn", spawn, "--policy", policy, "--drain-timeout", "5s"]
        if not sandbox:
            args.append("--no-sandbox")
        state = "on" if sandbox else "off"
        describe = f"{backend} server (spawn {spawn}, policy {policy}, sandbox {state})"
        return cls(root, args=[*args, *(extra or [])], describe=describe)

    def start(self, timeout_s: float) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        # The server must import this very package even from a source checkout that is not installed.
        src_root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH")) if p)
        # A file, not a pipe: nobody reads the server's output while it runs, and a full pipe would
        # stall it in the middle of a measurement.
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "strato", "faas", "serve", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own process group: Ctrl-C reaches us alone, and we stop it in order.
                start_new_session=True,
                preexec_fn=_terminate_with_parent,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            match = re.search(r"serving on (http://\S+)", self.log())
            if match:
                self.url = match.group(1)
                break
            if self.process.poll() is not None:
                raise StratoError(
                    f"the {self.describe} exited with status {self.process.returncode}:\n{self._tail()}"
                )
            if time.monotonic() > deadline:
                raise StratoError(
                    f"the {self.describe} did not start within {timeout_s:g} s:\n{self._tail()}"
                )
            time.sleep(0.02)
        # Read where the server sees it: a wrapper may have given it a mount namespace of its own.
        seen_from = Path(f"/proc/{self.process.pid}/root") if self.wrapper else Path("/")
        self.token = (seen_from / self.state_dir.relative_to("/")).joinpath("token").read_text().strip()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def warnings(self) -> list[str]:
        lines = self.log().splitlines()
        return [line.partition("warning:")[2].strip() for line in lines if "warning:" in line]

    def client(self, *, token: bool = True, timeout_s: float = 60.0) -> FaasClient:
        return FaasClient(self.url, self.token if token else None, timeout_s=timeout_s)

    def stop(self, grace_s: float = 15.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
        # The group holds the server and the helpers it started (provider, fork-server).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


def _terminate_with_parent() -> None:
    """In the server child: SIGTERM it (a clean shutdown) if its parent dies without stopping it."""
    import ctypes

    pr_set_pdeathsig = 1
    # Not Linux: no such call; a parent killed outright then leaves its server running.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


@contextlib.contextmanager
def running_server(server: ServerProcess, *, timeout_s: float = 60.0) -> Iterator[ServerProcess]:
    try:
        server.start(timeout_s)
        yield server
    finally:
        server.stop()
