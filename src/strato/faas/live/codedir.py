"""Reading a function's code from a directory, on the client's side and on the server's.

On the client (``strato faas deploy --dir``) the user reads their own files. On the server (a deploy with
``{"directory": PATH}``) the gateway would read them with its own privileges, root's, for whoever holds the
token: a confused deputy. So the server reads only below its ``--code-root``, in a child process that runs
as ``nobody`` when the server is root, and refuses symbolic links and anything that is not a regular file
or a directory (a link planted by a function could otherwise point at a root-only file).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import stat
from pathlib import Path
from typing import Any

from strato.errors import StratoError

SKIPPED = frozenset({"__pycache__", ".git"})
NOBODY = 65534
READ_TIMEOUT_S = 30.0


class CodeDirError(StratoError):
    """A code directory that cannot be deployed (answered with 400)."""


def read_tree(path: Path, *, limit_bytes: int, strict: bool) -> dict[str, bytes]:
    """Every regular file below ``path`` (relative name -> content), ``__pycache__`` and ``.git`` left out.
    ``strict`` refuses symbolic links and special files instead of following or skipping them."""
    files: dict[str, bytes] = {}
    total = 0
    pending = [path]
    while pending:
        directory = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            raise CodeDirError(f"cannot list {directory}: {error.strerror}") from None
        for entry in entries:
            if entry.name in SKIPPED:
                continue
            if strict and entry.is_symlink():
                raise CodeDirError(
                    f"{entry.path} is a symbolic link; directory deploys take only regular files"
                )
            if entry.is_dir():
                pending.append(Path(entry.path))
                continue
            if not entry.is_file():
                if strict:
                    raise CodeDirError(f"{entry.path} is not a regular file")
                continue
            content = _read_regular(entry.path, strict=strict)
            total += len(content)
            if total > limit_bytes:
                raise CodeDirError(f"{path} holds more than {limit_bytes} bytes of code")
            files[str(Path(entry.path).relative_to(path))] = content
    if not files:
        raise CodeDirError(f"{path} holds no files")
    return files


def _read_regular(path: str, *, strict: bool) -> bytes:
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW | os.O_NONBLOCK if strict else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise CodeDirError(f"cannot read {path}: {error.strerror}") from None
    with os.fdopen(descriptor, "rb") as file:
        # Checked on what was opened, so a file swapped for a FIFO or a device in between is caught too.
        if strict and not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise CodeDirError(f"{path} is not a regular file")
        return file.read()


async def read_unprivileged(root: Path, path: Path, *, limit_bytes: int) -> dict[str, bytes]:
    """Read a code directory for a deploy: only below ``root``, in a child process that runs as ``nobody``
    when we are root. A fork, not a new interpreter: nobody may not be able to reach the interpreter's
    files (a 0700 home holding it), and the child runs nothing but the reading below."""
    resolved = Path(os.path.realpath(path))
    if not resolved.is_relative_to(root):
        raise CodeDirError(f"directory {str(path)!r} is not below the server's code root {root}")
    drop = os.geteuid() == 0
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            if drop:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            try:
                files = read_tree(resolved, limit_bytes=limit_bytes, strict=True)
                answer: dict[str, object] = {
                    "files": {name: base64.b64encode(content).decode() for name, content in files.items()}
                }
            except CodeDirError as error:
                answer = {"error": str(error)}
            data = json.dumps(answer).encode()
            while data:
                data = data[os.write(write_fd, data) :]
        finally:
            os._exit(0)
    os.close(write_fd)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2 * limit_bytes + 65536)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb"))
    try:
        output = await asyncio.wait_for(reader.read(2 * limit_bytes + 65536), READ_TIMEOUT_S)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        raise CodeDirError(f"reading {path} took longer than {READ_TIMEOUT_S:g} s") from None
    finally:
        await asyncio.to_thread(os.waitpid, pid, 0)
    try:
        result: dict[str, Any] = json.loads(output)
    except ValueError:
        raise CodeDirError(f"reading {path} failed: the reader gave no answer") from None
    if "error" in result:
        who = " as the unprivileged user nobody" if drop else ""
        raise CodeDirError(f"{result['error']} (read{who})")
    return {name: base64.b64decode(content) for name, content in result["files"].items()}
