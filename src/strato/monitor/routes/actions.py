"""Actions and the audit log: the templates, running one on a group (admin), and every audited attempt.

Only configured, typed templates run; the runner audits every attempt, refused ones included, and the
API answers with the audit id as soon as the action row is committed, before any host runs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from strato.errors import ConfigError
from strato.monitor.actions import Template
from strato.monitor.audit import ActionRecord
from strato.monitor.routes.context import ADMIN, OPERATOR, Context, Group, refusals
from strato.monitor.views import ActionStarted

router = APIRouter(tags=["actions"])


class ActionRequest(BaseModel):
    template: str
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    operator: str = Field(default="api", description="who asks, recorded in the audit log")


@router.get("/api/templates", summary="The action templates and their typed parameters")
def templates(context: Context) -> list[Template]:
    return context.templates()


@router.get("/api/actions", summary="The audit log, newest first")
def actions(context: Context, group: str | None = None, limit: int = 50) -> list[ActionRecord]:
    return context.audit.list(limit=min(max(limit, 1), 500), group=group)


@router.get(
    "/api/actions/{action_id}", summary="One audited action with every host's result", responses=refusals(404)
)
def action(context: Context, action_id: int) -> ActionRecord:
    return context.audit.get(action_id)


@router.post(
    "/api/groups/{name}/actions",
    status_code=202,
    dependencies=ADMIN,
    summary="Run a template on every member; returns the audit id at once",
    responses=refusals(400, 401, 403, 404, 413, 503),
)
async def run(
    context: Context, group: Group, request: Request, body: Annotated[ActionRequest, Body()]
) -> ActionStarted:
    if not OPERATOR.fullmatch(body.operator):
        raise ConfigError("operator must be 1-64 letters, digits or _.@-")
    who = f"{body.operator} (api {request.client.host if request.client else '?'})"
    action_id = await context.start_action(group, body.template, body.params, who)
    return ActionStarted(id=action_id, url=f"/api/actions/{action_id}")
