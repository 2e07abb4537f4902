"""Liveness, readiness and Prometheus metrics, the same in every service.

`/health` says that the process answers, which version of Lyceum it runs and how long it
has been up; the gateway's `GET /status` gathers it from every service."""

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable
from importlib import metadata

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shared import metrics
from shared.db import Database

ReadinessCheck = Callable[[], Awaitable[bool]]

# A check that takes longer counts as failed in the `service_ready` gauge.
READINESS_CHECK_TIMEOUT_SECONDS = 1.5

PACKAGE = "lyceum"
UNKNOWN_VERSION = "unknown"

# When this process started, as near as it can tell: the module is imported at start-up.
_started = time.monotonic()


@functools.cache
def _package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


def version() -> str:
    """`LYCEUM_VERSION` when set (an image built from a tag, say), else the installed
    package's version."""
    return os.environ.get("LYCEUM_VERSION", "").strip() or _package_version()


def uptime_seconds() -> float:
    return round(time.monotonic() - _started, 3)


class Liveness(BaseModel):
    status: str = Field(examples=["ok"])
    version: str = Field(description="The version of Lyceum this process runs")
    uptime: float = Field(description="Seconds since this process started")


def liveness() -> Liveness:
    return Liveness(status="ok", version=version(), uptime=uptime_seconds())


router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness, version and uptime")
async def health() -> Liveness:
    return liveness()


@router.get("/ready", summary="Readiness: the service's database and event bus answer")
async def ready(request: Request) -> JSONResponse:
    checks: dict[str, ReadinessCheck] = request.app.state.collaborators.readiness_checks()
    results = {name: "ok" if await check() else "unavailable" for name, check in checks.items()}
    ok = all(value == "ok" for value in results.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": results}, 200 if ok else 503
    )


async def _passes(check: ReadinessCheck) -> bool:
    try:
        return await asyncio.wait_for(check(), READINESS_CHECK_TIMEOUT_SECONDS)
    except Exception:
        return False


def observe(
    service: str, readiness_checks: Callable[[], dict[str, ReadinessCheck]], database: Database
) -> metrics.Refresher:
    """The refresher of a service's readiness and database pool gauges."""

    async def refresh() -> None:
        metrics.record_pools(service, database.pools())
        checks = readiness_checks()
        results = await asyncio.gather(*(_passes(check) for check in checks.values()))
        for name, passed in zip(checks, results, strict=True):
            metrics.READINESS_CHECK.labels(service, name).set(int(passed))
        metrics.SERVICE_READY.labels(service).set(int(all(results)))

    return refresh


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    """Prometheus text format (docs/metrics.md): requests, readiness, the database pool, the
    outbox's backlog and failures, consumer lag, and the service's own."""
    body, content_type = await metrics.render()
    return Response(body, media_type=content_type)
