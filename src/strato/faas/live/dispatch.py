"""How an invocation reaches an instance, per backend.

* ``lean``: the gateway writes the request as one frame on the instance's own socket (no HTTP hop);
* ``faasd``: the gateway forwards HTTP to the provider process, which relays it to the instance's
  watchdog (OpenFaaS's faasd shape); an instance is registered with the provider once it is ready.

Both start instances with the same :class:`~strato.faas.live.instances.Spawner`. Tests may drive the node
with any other :class:`Backend` (one that starts no process at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from typing import Any, Protocol

from strato.faas.live import frames
from strato.faas.live.completion import Completion
from strato.faas.live.frames import HOP_BY_HOP
from strato.faas.live.httpio import ClientPool
from strato.faas.live.instances import Instance, Spawner

INTERNAL_HEADER_PREFIX = "x-strato-"

Sent = Completion[Any] | asyncio.Future[Any]
"""An invocation's answer to come: the lean backend completes it synchronously, the faasd one as a task."""

Invocation = tuple[str, str, dict[str, str], bytes, bytes | None]
"""method, target as the function sees it, headers (checked by the gateway's parser), body, and the
header lines to pass on as the parser rendered them (None: render them from ``headers``)."""


class Backend(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def boot(self, instance: Instance) -> None:
        """Spawn ``instance`` and return once it can take invocations (raises on failure)."""
        ...

    def send(self, instance: Instance, request: Invocation) -> Sent:
        """Send an invocation; the result resolves with the instance's response (or its failure)."""
        ...

    def stopped(self, instance: Instance) -> None:
        """``instance`` was taken out of service."""
        ...


def request_head(
    method: str, target: str, headers: dict[str, str], body: bytes, forward: bytes | None
) -> bytes:
    """The head an instance gets: the gateway's own rendering of a request it parsed strictly, without
    framing headers (the body travels whole) or the platform's ``X-Strato-*`` headers."""
    if forward is None:
        forward = "\r\n".join(
            f"{name}: {value}"
            for name, value in headers.items()
            if name not in HOP_BY_HOP and not name.startswith(INTERNAL_HEADER_PREFIX)
        ).encode("latin-1")
    separator = b"\r\n" if forward else b""
    return b"%s %s HTTP/1.1\r\n%s%scontent-length: %d" % (
        method.encode("ascii"),
        target.encode("latin-1"),
        forward,
        separator,
        len(body),
    )


class LeanBackend:
    def __init__(self, spawner: Spawner) -> None:
        self.spawner = spawner

    async def start(self) -> None:
        await self.spawner.start()

    async def stop(self) -> None:
        await self.spawner.stop()

    async def boot(self, instance: Instance) -> None:
        ready = await self.spawner.spawn(instance)
        instance.port = ready.get("port")
        instance.function_pid = ready.get("function_pid")

    def send(self, instance: Instance, request: Invocation) -> Sent:
        assert instance.channel is not None
        method, target, headers, body, forward = request
        return instance.channel.invoke(
            frames.INVOKE, request_head(method, target, headers, body, forward), body
        )

    def stopped(self, instance: Instance) -> None:
        return None


class FaasdBackend:
    def __init__(self, spawner: Spawner, max_response: int, secret: str) -> None:
        self.spawner = spawner
        self.max_response = max_response
        self.secret = secret
        """Proves a request comes from this gateway to the provider (and from the provider onwards)."""
        self.provider: asyncio.subprocess.Process | None = None
        self.pool: ClientPool | None = None

    async def start(self) -> None:
        await self.spawner.start()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        port = listener.getsockname()[1]
        self.provider = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "strato.faas.live.provider",
            str(listener.fileno()),
            str(self.max_response),
            pass_fds=(listener.fileno(),),
            stdin=asyncio.subprocess.PIPE,
        )
        listener.close()
        assert self.provider.stdin is not None
        self.provider.stdin.write(self.secret.encode() + b"\n")
        await self.provider.stdin.drain()
        self.provider.stdin.close()
        self.pool = ClientPool.tcp("127.0.0.1", port, max_response=self.max_response)

    async def stop(self) -> None:
        await self.spawner.stop()
        if self.pool is not None:
            self.pool.close()
        if self.provider is not None:
            self.provider.terminate()
            await self.provider.wait()

    async def boot(self, instance: Instance) -> None:
        ready = await self.spawner.spawn(instance)
        instance.port = ready.get("port")
        instance.function_pid = ready.get("function_pid")
        # An instance stopped while it started is never registered (nothing would unregister it).
        if self.pool is not None and instance.port is not None and instance.state != "stopping":
            await self.pool.request(
                "PUT",
                f"/system/instances/{instance.id}",
                {"Content-Type": "application/json", "X-Strato-Hop": self.secret},
                json.dumps({"port": instance.port, "secret": instance.hop_secret}).encode(),
            )

    def send(self, instance: Instance, request: Invocation) -> asyncio.Future[Any]:
        assert self.pool is not None
        method, target, headers, body, _ = request
        forwarded = {
            key: value for key, value in headers.items() if not key.startswith(INTERNAL_HEADER_PREFIX)
        }
        forwarded["X-Strato-Instance"] = instance.id
        forwarded["X-Strato-Hop"] = self.secret
        return asyncio.ensure_future(self.pool.request(method, target, forwarded, body))

    def stopped(self, instance: Instance) -> None:
        if self.pool is not None and instance.port is not None:
            asyncio.get_running_loop().create_task(self._unregister(instance.id))

    async def _unregister(self, instance_id: str) -> None:
        if self.pool is not None:
            with contextlib.suppress(ConnectionError):
                await self.pool.request(
                    "DELETE", f"/system/instances/{instance_id}", {"X-Strato-Hop": self.secret}, b""
                )
