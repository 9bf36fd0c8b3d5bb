"""``/api/groups``: definitions, membership, history, and (with the admin token) edits.

An edit is one store transaction, after which membership is recomputed at once from the last snapshot,
so the answer shows the group as the next poll will. Refusals come from the store as strato errors,
answered by the server's one mapping: an unknown group 404, a duplicate 409, a locked database 503, bad
input (a rule that does not parse, a bad name) 400 with the reason.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from strato.monitor.routes.context import ADMIN, Context, Group, refusals
from strato.monitor.store import GroupDef
from strato.monitor.views import GroupView, HistoryView, group_view, history_view

router = APIRouter(prefix="/api/groups", tags=["groups"])


class GroupCreate(BaseModel):
    name: str = Field(description="1-64 letters, digits, '_', '.', '-'")
    rule: str | None = Field(default=None, description="a rule in strato's rule language (docs/monitor.md)")
    members: list[str] = Field(default_factory=list, description="hosts listed explicitly")
    description: str = ""


class GroupPatch(BaseModel):
    rule: str | None = Field(default=None, description="new rule; an empty string removes the rule")


class MembersChange(BaseModel):
    hosts: list[str]


def _changed(context: Context, changed: GroupDef) -> GroupView:
    context.monitor.refresh_groups()
    return group_view(changed, context.states().get(changed.name))


@router.get("", summary="Every group with members and aggregates")
def list_groups(context: Context) -> list[GroupView]:
    current = context.states()
    return [group_view(group, current.get(group.name)) for group in context.monitor.store.list()]


@router.get("/{name}", summary="One group", responses=refusals(404))
def get_group(context: Context, group: Group) -> GroupView:
    return group_view(group, context.states().get(group.name))


@router.get("/{name}/history", summary="A group's recent aggregates of one metric", responses=refusals(404))
def history(context: Context, group: Group, metric: str = "load_one") -> HistoryView:
    # tuple() copies the deque in one step; iterating it while the poller appends would raise.
    return history_view(group.name, metric, tuple(context.monitor.engine.history.get(group.name, ())))


@router.post(
    "",
    status_code=201,
    dependencies=ADMIN,
    summary="Create a group",
    responses=refusals(400, 401, 403, 409, 413, 503),
)
def create(context: Context, body: GroupCreate) -> GroupView:
    made = context.monitor.store.create(
        body.name, rule=body.rule, members=body.members, description=body.description
    )
    return _changed(context, made)


@router.patch(
    "/{name}",
    dependencies=ADMIN,
    summary="Change a group's rule",
    responses=refusals(400, 401, 403, 404, 413, 503),
)
def set_rule(context: Context, group: Group, body: GroupPatch) -> GroupView:
    # The group is looked up first: an unknown group is a 404 even when the new rule is also wrong.
    return _changed(context, context.monitor.store.set_rule(group.name, body.rule or None))


@router.post(
    "/{name}/members",
    dependencies=ADMIN,
    summary="List hosts in a group",
    responses=refusals(400, 401, 403, 404, 413, 503),
)
def add_members(context: Context, group: Group, body: MembersChange) -> GroupView:
    return _changed(context, context.monitor.store.add_members(group.name, body.hosts))


@router.delete(
    "/{name}/members/{host}",
    dependencies=ADMIN,
    summary="Unlist a host",
    responses=refusals(400, 401, 403, 404, 503),
)
def remove_member(context: Context, group: Group, host: str) -> GroupView:
    return _changed(context, context.monitor.store.remove_members(group.name, [host]))


@router.delete(
    "/{name}",
    status_code=204,
    dependencies=ADMIN,
    summary="Delete a group",
    responses=refusals(401, 403, 404, 503),
)
def delete(context: Context, name: str) -> Response:
    context.monitor.store.delete(name)
    context.monitor.refresh_groups()
    return Response(status_code=204)
