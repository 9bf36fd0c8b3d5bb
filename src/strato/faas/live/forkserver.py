"""The fork-server: a pre-initialised template process that forks function instances.

A fresh instance pays for a new interpreter and its imports (tens of milliseconds). The template has
already paid: it imported the runtime and probed the host's isolation support, so a cold start is one
``fork`` plus the handler's own import. The gateway sends the instance's control socket over a
``SOCK_SEQPACKET`` pair (``SCM_RIGHTS``); the template answers with the child's pid.

Joining a memory cgroup is the slowest step of isolation on cgroup v1 (the kernel waits for an RCU grace
period, about 10 ms here), and it does not depend on the function. So, when instances get cgroups, the
template keeps a few *zygotes*: children forked ahead of time that have already started their own
session and joined a fresh cgroup, waiting for a control socket. A cold start takes a zygote (the gateway
sets the function's memory limit on its cgroup) and the template forks a replacement in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass

from strato.faas.live import runtime
from strato.faas.live.isolation import HostSupport, InstanceCgroup, etc_snapshot, probe_host, runtime_dirs
from strato.faas.live.loop import die_with_parent

ZYGOTE_HEADROOM_MB = 1 << 20
"""A zygote's cgroup limit until its function's replaces it: effectively none."""


@dataclass
class Zygote:
    pid: int
    channel: socket.socket
    cgroup: InstanceCgroup


class Template:
    def __init__(self, support: HostSupport, pool_size: int) -> None:
        self.support = support
        self.pool_size = pool_size if support.cgroup is not None else 0
        self.zygotes: deque[Zygote] = deque()
        self.names = itertools.count(1)

    def fill(self, gateway: socket.socket) -> None:
        while len(self.zygotes) < self.pool_size:
            # Capital letters keep these names apart from every instance name (function names are lower case).
            cgroup = InstanceCgroup.create(
                self.support, f"Zygote-{os.getpid()}-{next(self.names)}", ZYGOTE_HEADROOM_MB
            )
            assert cgroup is not None
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pid = os.fork()
            if pid == 0:
                gateway.close()
                ours.close()
                for zygote in self.zygotes:
                    zygote.channel.close()
                _become_zygote(theirs, cgroup)
            theirs.close()
            self.zygotes.append(Zygote(pid, ours, cgroup))

    def spawn(self, gateway: socket.socket, fds: list[int]) -> dict[str, object]:
        """Start an instance on ``fds`` (its control socket and its log pipe)."""
        while self.zygotes:
            zygote = self.zygotes.popleft()
            try:
                socket.send_fds(zygote.channel, [b"c"], fds)
            except OSError:  # that zygote died; its cgroup goes with it
                zygote.cgroup.remove()
                continue
            finally:
                zygote.channel.close()
            pids = zygote.cgroup.pids_path
            return {"pid": zygote.pid, "cgroup": str(zygote.cgroup.path), "pids": str(pids) if pids else None}
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            gateway.close()
            for zygote in self.zygotes:
                zygote.channel.close()
            runtime.bootstrap(*_adopt(fds))
        return {"pid": pid, "cgroup": None, "pids": None}


def _become_zygote(channel: socket.socket, cgroup: InstanceCgroup) -> None:
    """In the forked zygote: do the function-independent slow steps, then wait to become an instance."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    die_with_parent()
    with contextlib.suppress(PermissionError):
        os.setsid()
    try:
        for procs in cgroup.procs_files:
            procs.write_text(str(os.getpid()))
        _, fds, _, _ = socket.recv_fds(channel, 16, 2)
    except OSError:
        os._exit(1)
    if len(fds) != 2:
        os._exit(0)
    channel.close()
    runtime.bootstrap(*_adopt(fds))


def _adopt(fds: list[int]) -> tuple[socket.socket, int]:
    """The control socket and the log pipe an instance was sent."""
    return socket.socket(fileno=fds[0]), fds[1]


def serve(channel: socket.socket, template: Template) -> None:
    """Fork one instance per request until the gateway closes the channel."""
    # Finished instances are reaped by the kernel; the gateway learns of their end from the socket.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    template.fill(channel)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(channel, 16, 2)
        except (ConnectionError, OSError):
            break
        if len(fds) != 2:
            break
        reply = template.spawn(channel, fds)
        for fd in fds:
            os.close(fd)
        channel.send(json.dumps(reply).encode())
        template.fill(channel)
    for zygote in template.zygotes:
        zygote.channel.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(zygote.pid, signal.SIGKILL)
        zygote.cgroup.remove()


@dataclass(frozen=True)
class Forked:
    pid: int
    cgroup: str | None
    """A zygote's cgroup, already joined by the instance; None when the gateway must make one."""
    pids: str | None
    """The zygote's pids cgroup (another directory on cgroup v1), also joined."""


class ForkServerClient:
    """The gateway's side of the template."""

    def __init__(self, process: asyncio.subprocess.Process, channel: socket.socket) -> None:
        self.process = process
        self.channel = channel
        self.lock = asyncio.Lock()

    @classmethod
    async def start(cls, support: HostSupport | None, *, zygotes: int) -> ForkServerClient:
        """Start the template; it uses the gateway's ``support`` so its cgroups live under the gateway's."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        described = json.dumps(support.to_json()) if support is not None else "null"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "strato.faas.live.forkserver",
            str(theirs.fileno()),
            str(zygotes),
            described,
            pass_fds=(theirs.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
            # Nothing of the server's environment (its token among it) reaches what the template forks.
            env=runtime.helper_environment(),
        )
        theirs.close()
        ours.setblocking(False)
        return cls(process, ours)

    async def fork(self, control: socket.socket, log_fd: int) -> Forked:
        """Start an instance that will run on ``control`` (the instance's end of its socket) and write its
        output to ``log_fd``."""
        loop = asyncio.get_running_loop()
        async with self.lock:
            socket.send_fds(self.channel, [b"f"], [control.fileno(), log_fd])
            reply = await loop.sock_recv(self.channel, 4096)
        if not reply:
            raise ConnectionError("the fork-server exited")
        data = json.loads(reply)
        return Forked(int(data["pid"]), data["cgroup"], data["pids"])

    async def stop(self) -> None:
        self.channel.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5.0)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def main() -> None:
    die_with_parent()
    described = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    support = HostSupport.from_json(described) if described else probe_host()
    # Read once here, so that every instance forked from the template builds its root from memory.
    runtime_dirs()
    etc_snapshot()
    serve(socket.socket(fileno=int(sys.argv[1])), Template(support, int(sys.argv[2])))


if __name__ == "__main__":
    main()
