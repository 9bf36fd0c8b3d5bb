"""``strato monitor serve``: the dashboard, the JSON API and ``/metrics`` over one monitor.

Reads are open (the server binds 127.0.0.1 by default); everything that changes state (groups, actions)
needs the admin token: ``Authorization: Bearer TOKEN`` for the API, or the HttpOnly, SameSite=Strict
cookie that ``/login`` sets for the dashboard's forms. SameSite keeps other *sites* from using the
cookie, but a page on another port of the same host is the same site, so every state-changing request
that authenticates with the cookie must also come from this server's own origin: its ``Origin`` (else
``Referer``) must name the host and port the request was sent to, or it is refused with 403. A browser
cannot forge either header; a Bearer token is never sent by a browser on its own, so it needs no check.

Request bodies are bounded before anything parses them (1 MiB, JSON nested at most 32 deep); a locked
database answers 503 with the reason, a conflicting edit 409. Actions started from the web use only the
configured, typed templates; the runner audits every attempt, refused ones included. The poller runs in a
thread, started once the socket listens; handlers read its latest result.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hmac
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Body, Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field

from strato.errors import ConfigError
from strato.monitor import prometheus
from strato.monitor.actions import ActionError, ActionRunner, Template
from strato.monitor.audit import ActionRecord, AuditLog
from strato.monitor.charts import line_chart
from strato.monitor.dbfile import DatabaseBusyError
from strato.monitor.groups import GroupState
from strato.monitor.model import Host
from strato.monitor.service import Monitor
from strato.monitor.store import GroupDef, GroupExistsError, GroupNotFoundError

COOKIE = "strato_monitor_token"
OPERATOR = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
SUMMARY_METRICS = ("load_one", "cpu_user", "mem_free", "bytes_in", "kv_util", "queued_prompts")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
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


def same_origin(request: Request) -> bool:
    """Whether a request comes from this server's own pages: its ``Origin`` (else ``Referer``) names the
    host and port it was sent to. Compared without the scheme, so a TLS-terminating proxy in front of
    the server does not break the dashboard; one port serves one scheme, so that loses nothing."""
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    host = request.headers.get("host", "").lower()
    parts = urlsplit(source)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host


class GroupCreate(BaseModel):
    name: str = Field(description="1-64 letters, digits, '_', '.', '-'")
    rule: str | None = Field(default=None, description="a rule in strato's rule language (docs/monitor.md)")
    members: list[str] = Field(default_factory=list, description="hosts listed explicitly")
    description: str = ""


class GroupPatch(BaseModel):
    rule: str | None = Field(default=None, description="new rule; an empty string removes the rule")


class MembersChange(BaseModel):
    hosts: list[str]


class ActionRequest(BaseModel):
    template: str
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    operator: str = Field(default="api", description="who asks, recorded in the audit log")


def _finite_dict(value: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = _finite(value)
    return cleaned


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def host_json(host: Host, groups: list[str], stale_after_s: float | None) -> dict[str, Any]:
    return _finite_dict(
        {
            "name": host.name,
            "ip": host.ip,
            "cluster": host.cluster,
            "up": host.alive(stale_after_s),
            "tn": host.tn,
            "reported": host.reported,
            "groups": groups,
            "metrics": {
                name: {"value": metric.value, "type": metric.type, "units": metric.units, "tn": metric.tn}
                for name, metric in sorted(host.metrics.items())
            },
        }
    )


def group_json(definition: GroupDef, state: GroupState | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": definition.name,
        "rule": definition.rule,
        "listed": list(definition.members),
        "description": definition.description,
    }
    if state is not None:
        data.update(
            members=state.members,
            up=state.up,
            down=state.down,
            entered=state.entered,
            left=state.left,
            aggregates=state.aggregates,
            warnings=state.warnings,
            error=state.error,
        )
    return _finite_dict(data)


def template_json(template: Template) -> dict[str, Any]:
    return {
        "name": template.name,
        "argv": list(template.argv),
        "description": template.description,
        "timeout_s": template.timeout_s,
        "params": {name: asdict(spec) for name, spec in template.params.items()},
    }


def record_json(record: ActionRecord) -> dict[str, Any]:
    return _finite_dict(asdict(record))


def create_app(monitor: Monitor, token: str, *, audit: AuditLog | None = None) -> FastAPI:
    config = monitor.config
    audit = audit or AuditLog(config.db_path)
    runner = ActionRunner(audit, parallelism=config.parallelism, timeout_s=config.action_timeout_s)
    executor = config.make_executor()
    running: set[asyncio.Task[ActionRecord]] = set()
    pages = Environment(loader=PackageLoader("strato.monitor", "web"), autoescape=select_autoescape(["html"]))
    pages.filters["clock"] = lambda stamp: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Shutting down (SIGTERM, Ctrl-C): cancel running actions, so the runner kills every host's
        # process group and audits them as interrupted instead of leaving orphans and 'running' rows.
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    app = FastAPI(
        title="strato monitor",
        description="C2MS dynamic server groups over Ganglia: groups, aggregates, actions.",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimits)

    @app.exception_handler(DatabaseBusyError)
    async def database_busy(_: Request, error: DatabaseBusyError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "2"})

    def authorised(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        if given.lower().startswith("bearer "):
            return hmac.compare_digest(given[7:].strip().encode(), token.encode())
        cookie = request.cookies.get(COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie.encode(), token.encode()):
            return False
        if request.method in UNSAFE_METHODS:
            refuse_cross_origin(request)
        return True

    def refuse_cross_origin(request: Request) -> None:
        if not same_origin(request):
            shown = request.headers.get("origin") or request.headers.get("referer") or "neither"
            raise HTTPException(
                403,
                "cross-origin request refused: a change made with the dashboard's cookie must come from its "
                f"own pages (Origin/Referer: {shown[:100]!r}; this server: {request.headers.get('host')!r})",
            )

    def require_admin(request: Request) -> None:
        if not authorised(request):
            raise HTTPException(401, "this endpoint needs the admin token (Authorization: Bearer TOKEN)")

    admin = [Depends(require_admin)]

    def states() -> dict[str, GroupState]:
        return monitor.result.groups if monitor.result is not None else {}

    def groups_of(host: str) -> list[str]:
        return sorted(name for name, state in states().items() if host in state.members)

    def definition(name: str) -> GroupDef:
        try:
            return monitor.store.get(name)
        except GroupNotFoundError as error:
            raise HTTPException(404, str(error)) from None

    def edited(name: str, change: Callable[[], GroupDef]) -> dict[str, Any]:
        """Apply a definition change, then recompute membership now. Refusals: 404 for a group that is
        not there (any more), 409 for one that already is, 400 with the reason for bad input."""
        try:
            changed = change()
        except GroupNotFoundError as error:
            raise HTTPException(404, str(error)) from None
        except GroupExistsError as error:
            raise HTTPException(409, str(error)) from None
        except DatabaseBusyError:
            raise
        except ConfigError as error:
            raise HTTPException(400, str(error)) from None
        monitor.refresh_groups()
        return group_json(changed, states().get(name))

    async def start_action(group: str, template_name: str, params: Mapping[str, Any], who: str) -> int:
        """Start an action and return its audit id as soon as the audit row exists."""
        template = config.templates.get(template_name)
        if template is None:
            raise ActionError(
                f"no template named {template_name!r} (templates: {', '.join(sorted(config.templates))})"
            )
        state = states().get(group)
        members = state.members if state is not None else list(definition(group).members)
        snapshot = monitor.snapshot
        targets = [config.target(host, snapshot.hosts.get(host) if snapshot else None) for host in members]
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_start(action_id: int) -> None:
            if not started.done():
                started.set_result(action_id)

        task = asyncio.create_task(
            runner.run(
                who=who,
                group=group,
                template=template,
                values=params,
                targets=targets,
                executor=executor,
                on_start=on_start,
            )
        )
        running.add(task)
        task.add_done_callback(running.discard)
        either: list[asyncio.Future[Any]] = [task, started]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            return started.result()
        return task.result().id  # rejected before starting: raises ActionError with the reason

    def page(name: str, request: Request, **context: Any) -> HTMLResponse:
        body = pages.get_template(name).render(
            request=request,
            status=monitor.status,
            admin=authorised(request),
            config=config,
            now=time.time(),
            **context,
        )
        return HTMLResponse(body)

    # ---- health and Prometheus ------------------------------------------------------------------

    @app.get("/healthz", response_class=PlainTextResponse, include_in_schema=False)
    def healthz() -> str:
        return "ok\n"

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus exposition with group labels")
    def metrics() -> PlainTextResponse:
        text = prometheus.render(
            monitor.snapshot, monitor.result, monitor.status, stale_after_s=config.stale_after_s
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    # ---- JSON API: reads ------------------------------------------------------------------------

    @app.get("/api/status", summary="Poller state: last poll, errors, sizes")
    def api_status() -> dict[str, Any]:
        result = monitor.result
        return _finite_dict(
            {
                "source": config.source,
                "interval_s": config.interval_s,
                **asdict(monitor.status),
                "hosts": result.hosts if result else 0,
                "hosts_up": result.hosts_up if result else 0,
                "groups": len(result.groups) if result else 0,
            }
        )

    @app.get("/api/hosts", summary="Every host Ganglia reports, with metrics and groups")
    def api_hosts() -> list[dict[str, Any]]:
        snapshot = monitor.snapshot
        if snapshot is None:
            return []
        return [
            host_json(host, groups_of(host.name), config.stale_after_s)
            for _, host in sorted(snapshot.hosts.items())
        ]

    @app.get("/api/hosts/{name}", summary="One host")
    def api_host(name: str) -> dict[str, Any]:
        snapshot = monitor.snapshot
        host = snapshot.hosts.get(name) if snapshot else None
        if host is None:
            raise HTTPException(404, f"Ganglia reports no host named {name!r}")
        return host_json(host, groups_of(name), config.stale_after_s)

    @app.get("/api/groups", summary="Every group with members and aggregates")
    def api_groups() -> list[dict[str, Any]]:
        current = states()
        return [group_json(group, current.get(group.name)) for group in monitor.store.list()]

    @app.get("/api/groups/{name}", summary="One group")
    def api_group(name: str) -> dict[str, Any]:
        return group_json(definition(name), states().get(name))

    @app.get("/api/groups/{name}/history", summary="A group's recent aggregates of one metric")
    def api_history(name: str, metric: str = "load_one") -> dict[str, Any]:
        definition(name)
        # tuple() copies the deque in one step; iterating it while the poller appends would raise.
        series = tuple(monitor.engine.history.get(name, ()))
        points = [
            {
                "t": t,
                "members_up": up,
                "mean": stats[metric][0],
                "min": stats[metric][1],
                "max": stats[metric][2],
            }
            for t, up, stats in series
            if metric in stats
        ]
        return _finite_dict({"group": name, "metric": metric, "points": points})

    @app.get("/api/templates", summary="The action templates and their typed parameters")
    def api_templates() -> list[dict[str, Any]]:
        return [template_json(item) for item in sorted(config.templates.values(), key=lambda item: item.name)]

    @app.get("/api/actions", summary="The audit log, newest first")
    def api_actions(group: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return [record_json(record) for record in audit.list(limit=min(max(limit, 1), 500), group=group)]

    @app.get("/api/actions/{action_id}", summary="One audited action with every host's result")
    def api_action(action_id: int) -> dict[str, Any]:
        try:
            return record_json(audit.get(action_id))
        except ConfigError as error:
            raise HTTPException(404, str(error)) from None

    # ---- JSON API: admin ------------------------------------------------------------------------

    @app.post("/api/groups", status_code=201, dependencies=admin, summary="Create a group")
    def api_create(body: GroupCreate) -> dict[str, Any]:
        return edited(
            body.name,
            lambda: monitor.store.create(
                body.name, rule=body.rule, members=body.members, description=body.description
            ),
        )

    @app.patch("/api/groups/{name}", dependencies=admin, summary="Change a group's rule")
    def api_patch(name: str, body: GroupPatch) -> dict[str, Any]:
        definition(name)  # an unknown group is a 404 even when the new rule is also wrong
        return edited(name, lambda: monitor.store.set_rule(name, body.rule or None))

    @app.post("/api/groups/{name}/members", dependencies=admin, summary="List hosts in a group")
    def api_add(name: str, body: MembersChange) -> dict[str, Any]:
        definition(name)
        return edited(name, lambda: monitor.store.add_members(name, body.hosts))

    @app.delete("/api/groups/{name}/members/{host}", dependencies=admin, summary="Unlist a host")
    def api_remove(name: str, host: str) -> dict[str, Any]:
        definition(name)
        return edited(name, lambda: monitor.store.remove_members(name, [host]))

    @app.delete("/api/groups/{name}", status_code=204, dependencies=admin, summary="Delete a group")
    def api_delete(name: str) -> Response:
        try:
            monitor.store.delete(name)
        except GroupNotFoundError as error:
            raise HTTPException(404, str(error)) from None
        monitor.refresh_groups()
        return Response(status_code=204)

    @app.post(
        "/api/groups/{name}/actions",
        status_code=202,
        dependencies=admin,
        summary="Run a template on every member; returns the audit id at once",
    )
    async def api_run(name: str, request: Request, body: Annotated[ActionRequest, Body()]) -> dict[str, Any]:
        definition(name)
        if not OPERATOR.fullmatch(body.operator):
            raise HTTPException(400, "operator must be 1-64 letters, digits or _.@-")
        who = f"{body.operator} (api {request.client.host if request.client else '?'})"
        try:
            action_id = await start_action(name, body.template, body.params, who)
        except ActionError as error:
            raise HTTPException(400, str(error)) from None
        return {"id": action_id, "url": f"/api/actions/{action_id}"}

    # ---- dashboard ------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview(request: Request) -> HTMLResponse:
        current = states()
        groups = [(group, current.get(group.name)) for group in monitor.store.list()]
        shown = [
            name for name in SUMMARY_METRICS if any(state and name in state.aggregates for _, state in groups)
        ]
        return page("overview.html", request, groups=groups, shown=shown, result=monitor.result)

    @app.get("/hosts", response_class=HTMLResponse, include_in_schema=False)
    def hosts_page(request: Request) -> HTMLResponse:
        snapshot = monitor.snapshot
        hosts = sorted(snapshot.hosts.values(), key=lambda host: host.name) if snapshot else []
        shown = sorted({name for host in hosts for name in host.metrics})[:12]
        return page(
            "hosts.html", request, hosts=hosts, shown=shown, groups_of=groups_of, stale=config.stale_after_s
        )

    @app.get("/groups/{name}", response_class=HTMLResponse, include_in_schema=False)
    def group_page(request: Request, name: str, metric: str | None = None) -> HTMLResponse:
        return render_group(request, name, metric)

    def render_group(
        request: Request, name: str, metric: str | None = None, action_error: str | None = None
    ) -> HTMLResponse:
        group = definition(name)
        state = states().get(name)
        snapshot = monitor.snapshot
        members = [
            (host, snapshot.hosts.get(host) if snapshot else None)
            for host in (state.members if state else group.members)
        ]
        metric_names = sorted(state.aggregates) if state else []
        shown = [m for m in SUMMARY_METRICS if m in metric_names] or metric_names[:6]
        chosen = metric if metric in metric_names else (shown[0] if shown else None)
        charts = []
        series = tuple(monitor.engine.history.get(name, ()))
        if chosen:
            points = [(t, stats[chosen]) for t, _, stats in series if chosen in stats]
            units = ""
            # The snapshot may be newer than the result (a poll in between): look hosts up defensively.
            first = snapshot.hosts.get(state.up[0]) if snapshot and state and state.up else None
            if first is not None and chosen in first.metrics:
                units = first.metrics[chosen].units
            charts.append(
                line_chart(
                    [t for t, _ in points],
                    [v[0] for _, v in points],
                    [v[1] for _, v in points],
                    [v[2] for _, v in points],
                    title=f"{chosen}: mean, min-max band",
                    units=units,
                )
            )
        size = [(t, float(up)) for t, up, _ in series]
        charts.append(line_chart([t for t, _ in size], [v for _, v in size], title="members up"))
        return page(
            "group.html",
            request,
            group=group,
            state=state,
            members=members,
            shown=shown,
            metric_names=metric_names,
            chosen=chosen,
            charts=charts,
            templates=sorted(config.templates.values(), key=lambda item: item.name),
            actions=audit.list(limit=10, group=name),
            stale=config.stale_after_s,
            action_error=action_error,
        )

    @app.post("/groups/{name}/actions", include_in_schema=False)
    async def group_action(request: Request, name: str) -> Response:
        definition(name)
        if not authorised(request):
            return RedirectResponse(f"/login?next=/groups/{name}", status_code=303)
        form = await request.form()
        operator = str(form.get("operator", "")).strip()
        template = str(form.get("template", ""))
        prefix = f"param.{template}."
        params = {
            key[len(prefix) :]: str(value)
            for key, value in form.items()
            if key.startswith(prefix) and str(value) != ""
        }
        error: str | None = None
        if not OPERATOR.fullmatch(operator):
            error = "operator must be 1-64 letters, digits or _.@- (it goes into the audit log)"
        else:
            who = f"{operator} (web {request.client.host if request.client else '?'})"
            try:
                action_id = await start_action(name, template, params, who)
            except ActionError as problem:
                error = str(problem)
            else:
                return RedirectResponse(f"/actions/{action_id}", status_code=303)
        response = render_group(request, name, action_error=error)
        response.status_code = 400
        return response

    @app.get("/actions/{action_id}", response_class=HTMLResponse, include_in_schema=False)
    def action_page(request: Request, action_id: int) -> HTMLResponse:
        try:
            record = audit.get(action_id)
        except ConfigError as error:
            raise HTTPException(404, str(error)) from None
        return page("action.html", request, record=record)

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> HTMLResponse:
        return page("login.html", request, next=next if next.startswith("/") else "/", failed=False)

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request, token_given: Annotated[str, Form(alias="token")], next: Annotated[str, Form()] = "/"
    ) -> Response:
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        if not hmac.compare_digest(token_given.strip().encode(), token.encode()):
            refused = page("login.html", request, next=target, failed=True)
            refused.status_code = 401
            return refused
        accepted = RedirectResponse(target, status_code=303)
        accepted.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=12 * 3600)
        return accepted

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        if request.cookies.get(COOKIE):
            refuse_cross_origin(request)
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    app.state.monitor = monitor
    app.state.audit = audit
    app.state.running = running
    return app


def default_operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


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
