"""The faasd backend's in-instance watchdog: an HTTP reverse proxy in front of the function process.

It plays of-watchdog's HTTP mode: it listens on the instance's port and forwards every request over a
kept-alive HTTP connection to the function process, which runs the handler behind its own HTTP server.
"""

from __future__ import annotations

import asyncio
import hmac
import socket

from strato.faas.live.httpio import (
    ClientPool,
    ClientProtocol,
    ConnectionTracker,
    Request,
    Response,
    ServerLimits,
    ServerProtocol,
    error_response,
)
from strato.faas.live.loop import new_event_loop
from strato.faas.live.runtime import FATAL_HEADER, reap_orphans

WATCHDOG_MAX_BODY = 1 << 30
"""The gateway enforces the real limit; the watchdog only has to carry what it was given."""


class _Upstreams:
    """One connection per function-process worker; a request waits for a free one."""

    def __init__(self, pools: list[ClientPool]) -> None:
        self.free: asyncio.Queue[ClientPool] = asyncio.Queue()
        for pool in pools:
            self.free.put_nowait(pool)

    async def forward(self, request: Request) -> Response:
        pool = await self.free.get()
        try:
            return await pool.request(request.method, request.target, request.headers, request.body)
        finally:
            self.free.put_nowait(pool)


def run_watchdog(
    control: socket.socket,
    listener: socket.socket,
    upstream_sockets: list[socket.socket],
    *,
    max_response: int,
    hop_secret: str,
) -> int:
    """Serve until the gateway closes the control socket or the function process dies."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    stopped = loop.create_future()

    async def connect_to(sock: socket.socket) -> tuple[asyncio.BaseTransport, ClientProtocol]:
        return await loop.create_unix_connection(lambda: ClientProtocol(max_response), sock=sock)

    def reap() -> None:
        # As pid 1 of the instance's namespace the watchdog inherits the function's orphans.
        reap_orphans(always=True)
        loop.call_later(1.0, reap)

    pools = [ClientPool(lambda sock=sock: connect_to(sock)) for sock in upstream_sockets]  # type: ignore[misc]
    upstreams = _Upstreams(pools)

    async def handle(request: Request) -> Response:
        if not hmac.compare_digest(request.headers.pop("x-strato-hop", ""), hop_secret):
            return error_response(403, "only the platform's provider may call this instance")
        if not stopped.done():
            try:
                return await upstreams.forward(request)
            except OSError:  # the connection to the function process is gone, so is the process
                if not stopped.done():
                    stopped.set_result(1)
        response = error_response(502, "the function process died during the request")
        # Tells the gateway to retire this instance now rather than when its control socket closes.
        response.headers.append((FATAL_HEADER, "1"))
        return response

    class ControlWatch(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not stopped.done():
                stopped.set_result(0)

    async def main() -> int:
        reap()
        tracker = ConnectionTracker()
        server = await loop.create_server(
            lambda: ServerProtocol(handle, limits=ServerLimits.internal(WATCHDOG_MAX_BODY), tracker=tracker),
            sock=listener,
        )
        await loop.connect_accepted_socket(ControlWatch, sock=control)
        status: int = await stopped
        # Let the 502 for the request that found the function dead reach the provider first.
        await asyncio.sleep(0.01)
        server.close()
        return status

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()
