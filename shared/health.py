"""Liveness and readiness, the same in every service."""

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

ReadinessCheck = Callable[[], Awaitable[bool]]

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: the service's database and event bus answer")
async def ready(request: Request) -> JSONResponse:
    checks: dict[str, ReadinessCheck] = request.app.state.readiness_checks
    results = {name: "ok" if await check() else "unavailable" for name, check in checks.items()}
    ok = all(value == "ok" for value in results.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": results}, 200 if ok else 503
    )
