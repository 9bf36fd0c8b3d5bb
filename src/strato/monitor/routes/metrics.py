"""Health, the poller's status, and Prometheus ``/metrics`` with group labels."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from strato.monitor import prometheus
from strato.monitor.routes.context import Context
from strato.monitor.views import StatusView, status_view

router = APIRouter(tags=["status"])


@router.get("/healthz", response_class=PlainTextResponse, include_in_schema=False)
def healthz() -> str:
    return "ok\n"


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus exposition with group labels")
def metrics(context: Context) -> PlainTextResponse:
    monitor = context.monitor
    text = prometheus.render(
        monitor.snapshot, monitor.result, monitor.status, stale_after_s=context.config.stale_after_s
    )
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@router.get("/api/status", summary="Poller state: last poll, errors, sizes")
def status(context: Context) -> StatusView:
    return status_view(context.config, context.monitor.status, context.monitor.result)
