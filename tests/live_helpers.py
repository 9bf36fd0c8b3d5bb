"""Start real `strato faas serve` processes for tests and give them functions to run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from strato.faas.live.client import FaasClient

HANDLERS = {
    "echo": """
        import json, os
        def handle(event):
            if event.path == "/whoami":
                return {"uid": os.getuid(), "pid": os.getpid(), "host": os.uname().nodename,
                        "tmp": os.environ.get("TMPDIR", "/tmp")}
            if event.path == "/status":
                return event.body, 201, {"X-Custom": "kept", "Content-Type": "text/x-strato"}
            if event.path == "/request":
                return {"method": event.method, "path": event.path, "query": event.query,
                        "header": event.headers.get("x-probe"), "body": event.text}
            return event.body
    """,
    "raises": """
        def handle(event):
            raise ValueError("bad input: " + event.text)
    """,
    "crash": """
        import os
        def handle(event):
            os._exit(7)
    """,
    "slow": """
        import time
        def handle(event):
            time.sleep(float(event.text or "1"))
            return "slept"
    """,
    "spin": """
        def handle(event):
            while True:
                pass
    """,
    "snoop": """
        import os
        def handle(event):
            path = event.text
            try:
                with open(path, "rb") as file:
                    return {"read": True, "bytes": len(file.read())}
            except OSError as error:
                return {"read": False, "error": type(error).__name__}
    """,
    "writer": """
        import os, tempfile
        def handle(event):
            directory = tempfile.gettempdir()
            path = os.path.join(directory, "mark")
            existed = os.path.exists(path)
            with open(path, "w") as file:
                file.write("x")
            return {"dir": directory, "existed": existed}
    """,
}


def write_function(root: Path, kind: str, source: str | None = None) -> Path:
    directory = root / f"fn-{kind}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "handler.py").write_text(textwrap.dedent(source or HANDLERS[kind]))
    return directory


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    state_dir: Path
    token: str

    def client(self, *, token: bool = True, timeout_s: float = 60.0) -> FaasClient:
        return FaasClient(self.url, self.token if token else None, timeout_s=timeout_s)

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)


@contextmanager
def running_server(state_dir: Path, *args: str) -> Iterator[Server]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "strato",
            "faas",
            "serve",
            "--port",
            "0",
            "--state-dir",
            str(state_dir),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        url = None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = re.search(r"serving on (http://\S+)", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            process.kill()
            raise RuntimeError(f"server did not start: {process.stderr.read() if process.stderr else ''}")
        token = (state_dir / "token").read_text().strip()
        yield Server(process, url, state_dir, token)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
