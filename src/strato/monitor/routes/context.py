"""What every route shares (the monitor, the audit log, the action runner, the admin token, the page
templates) and the FastAPI dependencies that hand it out and check who asks.

Authentication: ``Authorization: Bearer TOKEN`` for the API, or the HttpOnly, SameSite=Strict cookie that
``/login`` sets for the dashboard's forms, both checked by :class:`~strato.core.tokens.AdminToken`.
SameSite keeps other *sites* from using the cookie, but a page on another port of the same host is the
same site, so every state-changing request that authenticates with the cookie must also come from this
server's own origin: its ``Origin`` (else ``Referer``) must name the host and port the request was sent
to, or it is refused with 403. A browser cannot forge either header; a Bearer token is never sent by a
browser on its own, so it needs no check.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field

from strato.core.tokens import AdminToken
from strato.monitor.actions import ActionError, ActionRunner, Executor, Template
from strato.monitor.audit import ActionRecord, AuditLog
from strato.monitor.config import MonitorConfig
from strato.monitor.groups import GroupState
from strato.monitor.service import Monitor
from strato.monitor.store import GroupDef

COOKIE = "strato_monitor_token"
OPERATOR = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def page_templates() -> Environment:
    pages = Environment(loader=PackageLoader("strato.monitor", "web"), autoescape=select_autoescape(["html"]))
    pages.filters["clock"] = lambda stamp: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    return pages


@dataclass
class ServerContext:
    monitor: Monitor
    audit: AuditLog
    admin: AdminToken
    runner: ActionRunner
    executor: Executor
    pages: Environment = field(default_factory=page_templates)
    running: set[asyncio.Task[ActionRecord]] = field(default_factory=set)
    """Actions started from the API or the dashboard; cancelled (hosts killed, audited) at shutdown."""

    @property
    def config(self) -> MonitorConfig:
        return self.monitor.config

    def states(self) -> dict[str, GroupState]:
        result = self.monitor.result
        return result.groups if result is not None else {}

    def templates(self) -> list[Template]:
        return sorted(self.config.templates.values(), key=lambda item: item.name)

    def authorised(self, request: Request) -> bool:
        """Whether ``request`` carries the admin token; a cookie on a state-changing request must also
        come from this server's own pages (else 403)."""
        header = request.headers.get("authorization")
        if header is not None and header[:7].lower() == "bearer ":
            return self.admin.bearer(header)
        cookie = request.cookies.get(COOKIE, "")
        if not cookie or not self.admin.matches(cookie):
            return False
        if request.method in UNSAFE_METHODS:
            refuse_cross_origin(request)
        return True

    async def start_action(
        self, group: GroupDef, template_name: str, params: Mapping[str, Any], who: str
    ) -> int:
        """Start an action on the group's members and return its audit id as soon as the audit row exists;
        an action refused before it starts raises :class:`ActionError` with the reason."""
        template = self.config.templates.get(template_name)
        if template is None:
            raise ActionError(
                f"no template named {template_name!r} (templates: {', '.join(sorted(self.config.templates))})"
            )
        state = self.states().get(group.name)
        members = state.members if state is not None else list(group.members)
        snapshot = self.monitor.snapshot
        targets = [
            self.config.target(host, snapshot.hosts.get(host) if snapshot else None) for host in members
        ]
        started: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_start(action_id: int) -> None:
            if not started.done():
                started.set_result(action_id)

        task = asyncio.create_task(
            self.runner.run(
                who=who,
                group=group.name,
                template=template,
                values=params,
                targets=targets,
                executor=self.executor,
                on_start=on_start,
            )
        )
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        either: list[asyncio.Future[Any]] = [task, started]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            return started.result()
        return task.result().id  # rejected before starting: raises ActionError with the reason

    def page(self, name: str, request: Request, **context: Any) -> HTMLResponse:
        body = self.pages.get_template(name).render(
            request=request,
            status=self.monitor.status,
            admin=self.authorised(request),
            config=self.config,
            now=time.time(),
            **context,
        )
        return HTMLResponse(body)


def same_origin(request: Request) -> bool:
    """Whether a request comes from this server's own pages: its ``Origin`` (else ``Referer``) names the
    host and port it was sent to. Compared without the scheme, so a TLS-terminating proxy in front of
    the server does not break the dashboard; one port serves one scheme, so that loses nothing."""
    source = request.headers.get("origin") or request.headers.get("referer") or ""
    host = request.headers.get("host", "").lower()
    parts = urlsplit(source)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == host


def refuse_cross_origin(request: Request) -> None:
    if not same_origin(request):
        shown = request.headers.get("origin") or request.headers.get("referer") or "neither"
        raise HTTPException(
            403,
            "cross-origin request refused: a change made with the dashboard's cookie must come from its "
            f"own pages (Origin/Referer: {shown[:100]!r}; this server: {request.headers.get('host')!r})",
        )


def server_context(request: Request) -> ServerContext:
    return cast(ServerContext, request.app.state.context)


Context = Annotated[ServerContext, Depends(server_context)]


def require_admin(request: Request, context: Context) -> None:
    if not context.authorised(request):
        raise HTTPException(401, "this endpoint needs the admin token (Authorization: Bearer TOKEN)")


ADMIN = [Depends(require_admin)]
"""Route dependencies of every endpoint that changes state."""


class Problem(BaseModel):
    """Every refusal: FastAPI's own (401, 403) and strato's errors (strato.monitor.server.strato_error)."""

    detail: str = Field(description="What was wrong, in one line")


_REFUSALS = {
    400: "Bad input (a name, a rule, a parameter); detail says which and why",
    401: "No admin token, or the wrong one",
    403: "A change made with the dashboard's cookie that did not come from the dashboard's own pages",
    404: "No such group, host or action",
    409: "Conflicts with what exists (a group of that name)",
    413: "The request body is over 1 MiB",
    503: "The database is locked by another process; Retry-After says when to try again",
}


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can refuse with these statuses, for the OpenAPI schema."""
    return {status: {"model": Problem, "description": _REFUSALS[status]} for status in statuses}


def existing_group(name: str, context: Context) -> GroupDef:
    """The group named in the path; an unknown one is a NotFoundError (404)."""
    return context.monitor.store.get(name)


Group = Annotated[GroupDef, Depends(existing_group)]
