"""``strato monitor serve``: the dashboard, the JSON API and ``/metrics`` over one monitor.

:func:`create_app` assembles the routers of :mod:`strato.monitor.routes` (groups, hosts, actions and
the audit log, status and metrics, dashboard pages) over one
:class:`~strato.monitor.routes.context.ServerContext`.
Reads are open (the server binds 127.0.0.1 by default); everything that changes state (groups, actions)
needs the admin token (see :mod:`strato.monitor.routes.context` for the cookie and its Origin check).

Request bodies are bounded before anything parses them (1 MiB, JSON nested at most 32 deep). Errors are
answered in one place, :func:`strato_error`: bad input 400, not found 404, a conflicting edit 409, a
locked database 503 with ``Retry-After``, each with the reason. The poller runs in a thread, started once
the socket listens; handlers read its latest result.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from strato.core.tokens import AdminToken
from strato.errors import StratoError, UnavailableError
from strato.monitor.actions import ActionRunner
from strato.monitor.audit import AuditLog
from strato.monitor.routes import actions, groups, hosts, metrics, pages
from strato.monitor.routes.context import UNSAFE_METHODS, ServerContext
from strato.monitor.service import Monitor

MAX_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 32

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]


class BodyLimits:
    """ASGI middleware: refuse a body over ``MAX_BODY_BYTES`` (413) or JSON nested deeper than
    ``MAX_JSON_DEPTH`` (400) before any handler, parser or validator sees it.

    Nothing else bounds what a client sends, and the body is read before the token is checked, so
    without this an anonymous client could make the server hold any amount of JSON, and a deep one
    made FastAPI's validation errors recurse past Python's limit (a 500).
    """

    def __init__(self, app: _App) -> None:
        self.app = app

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _refuse(scope, send, 413, f"the request body is over {MAX_BODY_BYTES // 1024} KiB")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                await _refuse(scope, send, 413, f"the request body is over {MAX_BODY_BYTES // 1024} KiB")
                return
            if not message.get("more_body", False):
                break
        # FastAPI reads a body without a Content-Type as JSON too.
        kind = headers.get(b"content-type", b"").lower()
        if (not kind or b"json" in kind) and _nested_deeper(body, MAX_JSON_DEPTH):
            await _refuse(scope, send, 400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
            return
        replayed = False

        async def replay() -> _Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(scope: _Scope, send: _Send, status: int, detail: str) -> None:
    # The connection stays open: uvicorn discards the rest of a refused upload, so the client gets to
    # read this answer instead of a reset.
    async def nothing() -> _Message:
        return {"type": "http.disconnect"}

    await JSONResponse({"detail": detail}, status_code=status)(scope, nothing, send)


def _nested_deeper(body: bytes | bytearray, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects more than ``limit`` deep (strings skipped)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # every ordinary request: no scan needed
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


async def strato_error(_: Request, error: Exception) -> JSONResponse:
    """Every strato error a route lets through, answered once: its status by kind (strato.errors) and
    the message as ``detail``, the shape FastAPI gives its own errors."""
    assert isinstance(error, StratoError)
    headers = {}
    if isinstance(error, UnavailableError) and error.retry_after_s is not None:
        headers["Retry-After"] = str(math.ceil(error.retry_after_s))
    return JSONResponse({"detail": str(error)}, status_code=error.http_status, headers=headers)


def create_app(monitor: Monitor, token: str, *, audit: AuditLog | None = None) -> FastAPI:
    config = monitor.config
    audit = audit or AuditLog(config.db_path)
    context = ServerContext(
        monitor=monitor,
        audit=audit,
        admin=AdminToken(token),
        runner=ActionRunner(audit, parallelism=config.parallelism, timeout_s=config.action_timeout_s),
        executor=config.make_executor(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Shutting down (SIGTERM, Ctrl-C): cancel running actions, so the runner kills every host's
        # process group and audits them as interrupted instead of leaving orphans and 'running' rows.
        for task in list(context.running):
            task.cancel()
        await asyncio.gather(*context.running, return_exceptions=True)

    app = FastAPI(
        title="strato monitor",
        description="C2MS dynamic server groups over Ganglia: groups, aggregates, actions.",
        version="1",
        lifespan=lifespan,
    )
    app.state.context = context
    app.add_middleware(BodyLimits)
    app.add_exception_handler(StratoError, strato_error)
    for area in (groups, hosts, actions, metrics, pages):
        app.include_router(area.router)
    return app


def serve(monitor: Monitor, token: str, *, ready_file: Path | None = None) -> None:
    """Poll in the background and serve until interrupted; ``ready_file`` gets the URL once listening."""
    import uvicorn

    from strato.monitor.gmetric import parse_address

    host, port = parse_address(monitor.config.listen, default_port=8700)
    app = create_app(monitor, token)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))

    async def run() -> None:
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started:
            # Polling starts once the socket listens: whatever the first poll meets, the dashboard
            # and the API are up to say so.
            monitor.start()
            if ready_file is not None:
                ready_file.write_text(f"http://{host}:{port}\n")
        await serving

    try:
        asyncio.run(run())
    finally:
        monitor.stop()
