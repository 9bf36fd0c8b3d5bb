"""``/api/hosts``: every host Ganglia reports, up or down, with its metrics and groups."""

from __future__ import annotations

from fastapi import APIRouter

from strato.errors import NotFoundError
from strato.monitor.routes.context import Context, refusals
from strato.monitor.views import HostView, groups_by_host, host_view

router = APIRouter(prefix="/api/hosts", tags=["hosts"])


@router.get("", summary="Every host Ganglia reports, with metrics and groups")
def list_hosts(context: Context) -> list[HostView]:
    snapshot = context.monitor.snapshot
    if snapshot is None:
        return []
    groups = groups_by_host(context.monitor.result)
    stale = context.config.stale_after_s
    return [host_view(host, groups.get(name, ()), stale) for name, host in sorted(snapshot.hosts.items())]


@router.get("/{name}", summary="One host", responses=refusals(404))
def get_host(context: Context, name: str) -> HostView:
    snapshot = context.monitor.snapshot
    host = snapshot.hosts.get(name) if snapshot else None
    if host is None:
        raise NotFoundError(f"Ganglia reports no host named {name!r}")
    return host_view(host, groups_by_host(context.monitor.result).get(name, ()), context.config.stale_after_s)
