"""Liveness, readiness and Prometheus metrics, the same in every service."""

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from shared import metrics

ReadinessCheck = Callable[[], Awaitable[bool]]

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: the service's database and event bus answer")
async def ready(request: Request) -> JSONResponse:
    checks: dict[str, ReadinessCheck] = request.app.state.collaborators.readiness_checks()
    results = {name: "ok" if await check() else "unavailable" for name, check in checks.items()}
    ok = all(value == "ok" for value in results.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": results}, 200 if ok else 503
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """Prometheus text format: the outbox's backlog and failures, consumer lag."""
    body, content_type = await metrics.render()
    return Response(body, media_type=content_type)
