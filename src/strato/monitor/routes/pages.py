"""The dashboard: Jinja2 pages (``web/``) with SVG charts, the action form, and the login cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from strato.monitor.actions import ActionError
from strato.monitor.charts import line_chart
from strato.monitor.routes.context import COOKIE, OPERATOR, Context, Group, refuse_cross_origin
from strato.monitor.store import GroupDef
from strato.monitor.views import groups_by_host

SUMMARY_METRICS = ("load_one", "cpu_user", "mem_free", "bytes_in", "kv_util", "queued_prompts")

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, context: Context) -> HTMLResponse:
    current = context.states()
    groups = [(group, current.get(group.name)) for group in context.monitor.store.list()]
    shown = [
        name for name in SUMMARY_METRICS if any(state and name in state.aggregates for _, state in groups)
    ]
    return context.page("overview.html", request, groups=groups, shown=shown, result=context.monitor.result)


@router.get("/hosts", response_class=HTMLResponse)
def hosts_page(request: Request, context: Context) -> HTMLResponse:
    snapshot = context.monitor.snapshot
    hosts = sorted(snapshot.hosts.values(), key=lambda host: host.name) if snapshot else []
    shown = sorted({name for host in hosts for name in host.metrics})[:12]
    groups = groups_by_host(context.monitor.result)
    return context.page(
        "hosts.html",
        request,
        hosts=hosts,
        shown=shown,
        groups_of=lambda name: groups.get(name, []),
        stale=context.config.stale_after_s,
    )


@router.get("/groups/{name}", response_class=HTMLResponse)
def group_page(request: Request, context: Context, group: Group, metric: str | None = None) -> HTMLResponse:
    return _group_page(request, context, group, metric)


def _group_page(
    request: Request,
    context: Context,
    group: GroupDef,
    metric: str | None = None,
    action_error: str | None = None,
) -> HTMLResponse:
    name = group.name
    state = context.states().get(name)
    snapshot = context.monitor.snapshot
    members = [
        (host, snapshot.hosts.get(host) if snapshot else None)
        for host in (state.members if state else group.members)
    ]
    metric_names = sorted(state.aggregates) if state else []
    shown = [m for m in SUMMARY_METRICS if m in metric_names] or metric_names[:6]
    chosen = metric if metric in metric_names else (shown[0] if shown else None)
    charts = []
    series = tuple(context.monitor.engine.history.get(name, ()))
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
    return context.page(
        "group.html",
        request,
        group=group,
        state=state,
        members=members,
        shown=shown,
        metric_names=metric_names,
        chosen=chosen,
        charts=charts,
        templates=context.templates(),
        actions=context.audit.list(limit=10, group=name),
        stale=context.config.stale_after_s,
        action_error=action_error,
    )


@router.post("/groups/{name}/actions")
async def group_action(request: Request, context: Context, group: Group) -> Response:
    if not context.authorised(request):
        return RedirectResponse(f"/login?next=/groups/{group.name}", status_code=303)
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
            action_id = await context.start_action(group, template, params, who)
        except ActionError as problem:  # refused before it started (audited): shown on the form
            error = str(problem)
        else:
            return RedirectResponse(f"/actions/{action_id}", status_code=303)
    response = _group_page(request, context, group, action_error=error)
    response.status_code = 400
    return response


@router.get("/actions/{action_id}", response_class=HTMLResponse)
def action_page(request: Request, context: Context, action_id: int) -> HTMLResponse:
    return context.page("action.html", request, record=context.audit.get(action_id))


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, context: Context, next: str = "/") -> HTMLResponse:
    return context.page("login.html", request, next=next if next.startswith("/") else "/", failed=False)


@router.post("/login")
def login(
    request: Request,
    context: Context,
    token_given: Annotated[str, Form(alias="token")],
    next: Annotated[str, Form()] = "/",
) -> Response:
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    if not context.admin.matches(token_given.strip()):
        refused = context.page("login.html", request, next=target, failed=True)
        refused.status_code = 401
        return refused
    accepted = RedirectResponse(target, status_code=303)
    accepted.set_cookie(COOKIE, token_given.strip(), httponly=True, samesite="strict", max_age=12 * 3600)
    return accepted


@router.post("/logout")
def logout(request: Request) -> Response:
    if request.cookies.get(COOKIE):
        refuse_cross_origin(request)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response
