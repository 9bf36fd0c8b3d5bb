"""The faasd backend's provider: a separate process between the gateway and the instances' watchdogs.

In faasd the gateway proxies every invocation to faasd-provider, which resolves the function to a
container address and proxies again to the watchdog inside it. This process does the same over real
HTTP with kept-alive connections: the gateway registers each instance's watchdog port here
(``PUT /system/instances/{id}``) and names the instance it picked in a header on each invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import socket
import sys

from strato.faas.live.httpio import (
    ClientPool,
    ConnectionTracker,
    Request,
    Response,
    ServerLimits,
    ServerProtocol,
    error_response,
)
from strato.faas.live.loop import die_with_parent, new_event_loop
from strato.faas.live.runtime import FATAL_HEADER

PROVIDER_MAX_BODY = 1 << 30
"""The gateway enforces the real body limit before anything reaches the provider."""


HOP_HEADER = "x-strato-hop"
"""The secret that proves a request comes from the platform: the provider and the watchdogs listen on
the host's loopback, which a function with network access shares."""


class Provider:
    def __init__(self, max_response: int, secret: str) -> None:
        self.instances: dict[str, tuple[ClientPool, str]] = {}
        self.max_response = max_response
        self.secret = secret

    async def handle(self, request: Request) -> Response:
        if not hmac.compare_digest(request.headers.pop(HOP_HEADER, ""), self.secret):
            return error_response(403, "only the platform's gateway may call the provider")
        path = request.path
        if path.startswith("/system/instances/"):
            instance_id = path.rsplit("/", 1)[1]
            if request.method == "PUT":
                registration = json.loads(request.body)
                pool = ClientPool.tcp("127.0.0.1", int(registration["port"]), max_response=self.max_response)
                self.instances[instance_id] = (pool, str(registration["secret"]))
                return Response(204)
            if request.method == "DELETE":
                registered = self.instances.pop(instance_id, None)
                if registered is not None:
                    registered[0].close()
                return Response(204)
            return error_response(405, "method not allowed")
        instance_id = request.headers.pop("x-strato-instance", "")
        registered = self.instances.get(instance_id)
        if registered is None:
            return _instance_lost(f"instance {instance_id!r} is not registered with the provider")
        pool, instance_secret = registered
        request.headers[HOP_HEADER] = instance_secret
        try:
            return await pool.request(request.method, request.target, request.headers, request.body)
        except OSError:
            return _instance_lost(f"instance {instance_id!r} died during the request")


def _instance_lost(message: str) -> Response:
    response = error_response(502, message)
    # Tells the gateway to retire the instance now rather than when its control socket closes.
    response.headers.append((FATAL_HEADER, "1"))
    return response


def main() -> None:
    die_with_parent()
    listener = socket.socket(fileno=int(sys.argv[1]))
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    # The secret comes on standard input: an argument would show in every process listing.
    provider = Provider(int(sys.argv[2]), sys.stdin.readline().strip())
    tracker = ConnectionTracker()

    async def serve() -> None:
        server = await loop.create_server(
            lambda: ServerProtocol(
                provider.handle, limits=ServerLimits.internal(PROVIDER_MAX_BODY), tracker=tracker
            ),
            sock=listener,
        )
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        loop.run_until_complete(serve())


if __name__ == "__main__":
    main()
