"""Start real `strato faas serve` processes for tests and give them functions to run."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from strato.faas.live import serverproc
from strato.faas.live.serverproc import ServerProcess

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


Server = ServerProcess


@contextmanager
def running_server(
    state_dir: Path, *args: str, env: dict[str, str] | None = None, wrapper: list[str] | None = None
) -> Iterator[ServerProcess]:
    """A real server whose state lives in ``state_dir`` (named "state"), stopped at the end."""
    assert state_dir.name == "state"
    server = ServerProcess(state_dir.parent, args=list(args), env=env, wrapper=wrapper)
    with serverproc.running_server(server) as running:
        yield running
