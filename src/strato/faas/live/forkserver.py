"""The fork-server: a pre-initialised template process that forks function instances.

A fresh instance pays for a new interpreter and its imports (tens of milliseconds). The template has
already paid: it imported the runtime and probed the host's isolation support, so a cold start is one
``fork`` plus the handler's own import. The gateway sends the instance's control socket over a
``SOCK_SEQPACKET`` pair (``SCM_RIGHTS``); the template answers with the child's pid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys

from strato.faas.live import runtime
from strato.faas.live.isolation import probe_host
from strato.faas.live.loop import die_with_parent

PID = struct.Struct("!i")


def serve(channel: socket.socket) -> None:
    """Fork one instance per request until the gateway closes the channel."""
    # Finished instances are reaped by the kernel; the gateway learns of their end from the socket.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(channel, 16, 1)
        except (ConnectionError, OSError):
            return
        if not fds:
            return
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            channel.close()
            runtime.bootstrap(socket.socket(fileno=fds[0]))
        os.close(fds[0])
        channel.send(PID.pack(pid))


class ForkServerClient:
    """The gateway's side of the template."""

    def __init__(self, process: asyncio.subprocess.Process, channel: socket.socket) -> None:
        self.process = process
        self.channel = channel
        self.lock = asyncio.Lock()

    @classmethod
    async def start(cls) -> ForkServerClient:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "strato.faas.live.forkserver",
            str(theirs.fileno()),
            pass_fds=(theirs.fileno(),),
        )
        theirs.close()
        ours.setblocking(False)
        return cls(process, ours)

    async def fork(self, control: socket.socket) -> int:
        """Fork an instance that will run on ``control`` (the instance's end); returns its pid."""
        loop = asyncio.get_running_loop()
        async with self.lock:
            socket.send_fds(self.channel, [b"f"], [control.fileno()])
            reply = await loop.sock_recv(self.channel, PID.size)
        if len(reply) != PID.size:
            raise ConnectionError("the fork-server exited")
        return int(PID.unpack(reply)[0])

    async def stop(self) -> None:
        self.channel.close()
        try:
            await asyncio.wait_for(self.process.wait(), 2.0)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def main() -> None:
    die_with_parent()
    probe_host()
    serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
