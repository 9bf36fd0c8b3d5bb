"""The gateway: an OpenFaaS-style HTTP API in front of the node.

Routes (admin routes need ``Authorization: Bearer <token>``; invocations too with ``protect_invoke``):

=========================================  ====================================================
``GET /healthz``                           liveness
``GET /metrics``                           Prometheus text
``GET /system/functions``                  deployed functions
``GET /system/functions/{name}``           one function with its instances and counters
``POST /system/functions``                 deploy (409 if it exists); ``PUT`` deploys or updates
``DELETE /system/functions/{name}``        remove (or ``DELETE /system/functions`` with
                                           ``{"functionName": name}`` as OpenFaaS does)
``POST /system/functions/{name}/unload``    stop its idle instances now, as a keep-alive unload
                                           does (its cache goes with them)
``GET /system/stats``                      keep-alive counters per function (cold starts, waste),
                                           the lane, and the storage broker and caches
``GET /system/logs/{name}[?lines=N]``       the function's output (stdout, stderr), last N lines
``ANY /function/{name}[/sub/path][?q]``    synchronous invocation: body, status and headers kept
=========================================  ====================================================
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

from strato.core.tokens import AdminToken, ensure_token_file
from strato.faas.live._leanpath import Lane
from strato.faas.live.codedir import CodeDirError, read_unprivileged
from strato.faas.live.httpio import (
    AnyResponse,
    ConnectionTracker,
    Request,
    Response,
    ServerLimits,
    ServerProtocol,
    error_response,
    json_response,
)
from strato.faas.live.instances import InvokeFailed
from strato.faas.live.loop import new_event_loop
from strato.faas.live.platform import Node, NodeConfig, spec_json_response
from strato.faas.live.registry import (
    DeployError,
    FunctionStore,
    StorageError,
    check_syntax,
    parse_deploy_request,
)


@dataclass(frozen=True)
class GatewayConfig:
    node: NodeConfig
    host: str = "127.0.0.1"
    port: int = 8080
    limits: ServerLimits = field(default_factory=ServerLimits)
    protect_invoke: bool = False
    lane_poll_s: float = 50e-6
    """How long the lane polls an instance for its answer when that is all the gateway has to do (at low
    load it saves the gateway two wake-ups; 0 turns it off)."""
    drain_timeout_s: float = 30.0
    token: str | None = None
    code_root: Path | None = None
    """Directory deploys (``{"directory": PATH}``) may only read below this; None refuses them."""

    @property
    def max_body(self) -> int:
        return self.limits.max_body


def default_state_dir() -> Path:
    configured = os.environ.get("STRATO_FAAS_STATE")
    if configured:
        return Path(configured)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "strato" / "faas"


def ensure_token(state_dir: Path) -> str:
    """Read the admin token, creating it (0600) on first start."""
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o711)
    return ensure_token_file(state_dir / "token")


class Gateway:
    def __init__(self, config: GatewayConfig, node: Node, token: str) -> None:
        self.config = config
        self.node = node
        self.token = token
        self.admin = AdminToken(token)
        self.store = FunctionStore(config.node.state_dir)
        self.deploy_lock = asyncio.Lock()
        self.load_problems: list[str] = []

    def load_deployed(self) -> list[str]:
        """Install every deployed function; returns the problems with the ones that had to be skipped."""
        specs, problems = self.store.load_all()
        for spec in specs:
            self.node.install(spec)
        self.load_problems = problems
        return problems

    def _authorised(self, request: Request) -> bool:
        return self.admin.bearer(request.authorization)

    def handle(self, request: Request) -> AnyResponse | Awaitable[AnyResponse]:
        path = request.path
        if path.startswith("/function/"):
            own_token = request.authorization is not None and self._authorised(request)
            if self.config.protect_invoke and not own_token:
                return _unauthorised()
            name, _, rest = path[len("/function/") :].partition("/")
            forward = request.forward
            # The platform's token never reaches function code; another Authorization is the function's.
            if request.authorization is not None and not own_token:
                forward += (b"\r\n" if forward else b"") + b"authorization: " + request.authorization
            headers = _NOT_NEEDED
            if self.node.config.backend != "lean":
                headers = {
                    k: v for k, v in request.headers.items() if not (own_token and k == "authorization")
                }
            target = "/" + rest + ("?" + request.query if request.query else "")
            return self.node.invoke(name, request.method, target, headers, request.body, forward)
        return self._handle_other(request)

    async def _handle_other(self, request: Request) -> Response:
        path = request.path
        if path == "/healthz":
            return json_response(200, {"status": "ok", "backend": self.node.config.backend})
        if path == "/metrics":
            return Response(
                200, self.node.metrics.render().encode(), [("Content-Type", "text/plain; version=0.0.4")]
            )
        if path.startswith("/system/"):
            if not self._authorised(request):
                return _unauthorised()
            return await self._system(request)
        return error_response(404, f"no route for {request.method} {path}")

    async def _system(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        method = request.method
        if parts == ["system", "stats"] and method == "GET":
            return json_response(200, {**self.node.stats(), "skipped_at_start": self.load_problems})
        if parts[:2] == ["system", "logs"] and len(parts) == 3 and method == "GET":
            return self._logs(parts[2], request.query)
        if parts[:2] == ["system", "functions"] and len(parts) == 4 and parts[3] == "unload":
            if method != "POST":
                return error_response(405, f"{method} is not allowed on {request.path}")
            stopped = self.node.unload(parts[2])
            if stopped is None:
                return error_response(404, f"no function named {parts[2]!r}")
            return json_response(200, {"name": parts[2], "stopped": stopped})
        if parts[:2] != ["system", "functions"] or len(parts) > 3:
            return error_response(404, f"no route for {method} {request.path}")
        if len(parts) == 3:
            if method == "GET":
                return spec_json_response(self.node, parts[2])
            if method == "DELETE":
                return await self._remove(parts[2])
            return error_response(405, f"{method} is not allowed on {request.path}")
        if method == "GET":
            return json_response(200, [self.node.describe(name) for name in sorted(self.node.functions)])
        if method in ("POST", "PUT"):
            return await self._deploy(request, update=method == "PUT")
        if method == "DELETE":
            try:
                name = json.loads(request.body or b"{}").get("functionName")
            except (ValueError, AttributeError, RecursionError):
                name = None
            if not isinstance(name, str):
                return error_response(400, 'DELETE /system/functions needs {"functionName": NAME}')
            return await self._remove(name)
        return error_response(405, f"{method} is not allowed on {request.path}")

    async def _deploy(self, request: Request, *, update: bool) -> Response:
        try:
            payload = json.loads(request.body)
        except ValueError as error:
            return error_response(400, f"the deploy body is not JSON: {error}")
        except RecursionError:
            return error_response(400, "the deploy body nests too deeply")
        async with self.deploy_lock:
            try:
                spec, source = parse_deploy_request(payload)
                if isinstance(source, dict):
                    files = source
                elif self.config.code_root is None:
                    return error_response(
                        400, "directory deploys are off on this server (start it with --code-root DIR)"
                    )
                else:
                    files = await read_unprivileged(
                        self.config.code_root, source, limit_bytes=self.config.max_body
                    )
                check_syntax(files)
            except (DeployError, CodeDirError) as error:
                return error_response(400, str(error))
            current = self.node.functions.get(spec.name)
            if current is not None and not update:
                return error_response(409, f"function {spec.name!r} exists; use PUT to update it")
            try:
                staged = self.store.stage(spec, files, current.spec if current else None)
            except StorageError as error:
                return error_response(error.status, str(error))
            try:
                await self.node.trial_load(staged)
                self.store.activate(staged)
            except InvokeFailed as failure:
                self.store.discard(staged)
                return error_response(400, f"function {spec.name!r} failed to load: {failure}")
            except StorageError as error:
                self.store.discard(staged)
                return error_response(error.status, str(error))
            except BaseException:
                self.store.discard(staged)
                raise
            self.node.install(staged)
        status = 200 if current is not None else 201
        return json_response(status, staged.to_public())

    def _logs(self, name: str, query: str) -> Response:
        if name not in self.node.functions:
            return error_response(404, f"no function named {name!r}")
        value = parse_qs(query).get("lines", ["100"])[-1]
        if not value.isdigit() or not 1 <= int(value) <= 100_000:
            return error_response(400, "lines must be an integer between 1 and 100000")
        lines = int(value)
        text = "".join(line + "\n" for line in self.node.log_for(name).tail(lines))
        return Response(200, text.encode(), [("Content-Type", "text/plain; charset=utf-8")])

    async def _remove(self, name: str) -> Response:
        async with self.deploy_lock:
            function = self.node.remove(name)
            if function is None:
                return error_response(404, f"no function named {name!r}")
            self.store.remove(name)
        return json_response(200, {"removed": name})


_NOT_NEEDED: dict[str, str] = {}
"""The lean backend passes the header lines the parser rendered (Request.forward), not a dict."""


def _unauthorised() -> Response:
    response = error_response(
        401, "missing or wrong bearer token (the server prints where its token file is)"
    )
    response.headers.append(("WWW-Authenticate", 'Bearer realm="strato"'))
    return response


def _connection_metrics(node: Node, tracker: ConnectionTracker) -> None:
    metrics = node.metrics
    metrics.gauge(
        "strato_faas_connections", "Open client connections", lambda: [((), float(len(tracker.connections)))]
    )
    metrics.gauge(
        "strato_faas_connections_refused",
        "Client connections turned away at --max-connections (a running total)",
        lambda: [((), float(tracker.refused))],
    )
    metrics.gauge(
        "strato_faas_connections_timed_out",
        "Client connections closed by a header, body, idle or write timeout (a running total)",
        lambda: [((), float(tracker.timed_out))],
    )
    metrics.gauge(
        "strato_faas_gateway_buffered_bytes",
        "Response bytes the gateway holds: instances' unfinished frames and what clients have not read",
        lambda: [((), float(tracker.buffered_bytes() + node.buffered_bytes()))],
    )


async def serve(
    config: GatewayConfig,
    *,
    on_ready: Callable[[str, Gateway], None] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the gateway until SIGTERM/SIGINT (or ``stop``), then drain and shut down; returns an exit code."""
    state_dir = config.node.state_dir
    token = config.token or ensure_token(state_dir)
    node = Node(config.node)
    await node.start()
    gateway = Gateway(config, node, token)
    for problem in gateway.load_deployed():
        print(f"warning: {problem}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    # The lane renders the head a lean instance gets; the faasd hops need the parsed fields.
    lane = None
    if config.node.backend == "lean":
        limits = config.limits
        lane = Lane(
            node.lane_routes,
            node.lane_finish,
            gateway.admin.bearer,
            config.protect_invoke,
            limits.max_head,
            limits.max_body,
            limits.max_headers,
            config.lane_poll_s,
        )
    tracker = ConnectionTracker()
    tracker.start_sweeping()
    _connection_metrics(node, tracker)
    server = await loop.create_server(
        lambda: ServerProtocol(gateway.handle, limits=config.limits, tracker=tracker, lane=lane),
        config.host,
        config.port,
        reuse_address=True,
        backlog=1024,
    )
    stop = stop or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    port = server.sockets[0].getsockname()[1]
    if on_ready is not None:
        on_ready(f"http://{config.host}:{port}", gateway)
    try:
        await stop.wait()
    finally:
        server.close()
        drained = await tracker.drain(config.drain_timeout_s)
        await node.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0 if drained else 1


def run(config: GatewayConfig, *, on_ready: Callable[[str, Gateway], None] | None = None) -> int:
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(serve(config, on_ready=on_ready))
    finally:
        loop.close()
