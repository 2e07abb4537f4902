import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from gateway import metrics
from gateway.edge import Edge
from gateway.middleware import ProxyMiddleware, SecurityHeadersMiddleware
from gateway.ratelimit import ClientAddress
from gateway.redaction import redact_logs, redact_spans
from gateway.settings import GatewaySettings
from shared import health
from shared.errors import ApiError, error_response, install_error_handlers
from shared.heap import freeze_startup_objects
from shared.logging import configure_logging, get_logger
from shared.request_id import RequestIdMiddleware
from shared.telemetry import (
    TraceContextMiddleware,
    configure_tracing,
    flush_spans,
    instrument_app,
)

log = get_logger(__name__)

# What a browser's script may read from a cross-origin answer.
EXPOSED_HEADERS = [
    "X-Request-ID",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
]


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    edge = Edge(settings)

    configure_tracing("gateway")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("gateway", settings.log_level, settings.log_format)
        redact_logs()
        redact_spans()
        await edge.start()
        freeze_startup_objects()
        log.info("gateway_started", port=settings.port, upstreams=settings.upstreams)
        try:
            yield
        finally:
            await edge.close()
            await flush_spans()

    app = FastAPI(
        title="Lyceum gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # When spans are recorded: a server span per request, which then carries the trace
        # upstream (else TraceContextMiddleware does); metrics are Prometheus'. Exporting is
        # shared.telemetry's set-up (configure_tracing).
        telemetry={
            "metrics": False,
            "logs": False,
            "operation_spans": False,
            "auto_configure": False,
        },
    )
    app.state.settings = settings
    app.state.edge = edge
    app.add_middleware(ProxyMiddleware, edge=edge)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
            allow_credentials=True,
        )
    app.add_middleware(SecurityHeadersMiddleware, settings=settings)
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(TraceContextMiddleware)

    addresses = ClientAddress(settings.trusted_proxies)

    @app.get("/health")
    async def liveness() -> health.Liveness:
        return health.liveness()

    @app.get("/status")
    async def status(request: Request) -> Response:
        """Public, under the default rate limit of the client's address."""
        peer = request.client.host if request.client else ""
        client_ip = addresses.resolve(peer, request.headers.get("x-forwarded-for"))
        rate_limit: list[tuple[bytes, bytes]] = []
        try:
            await edge.rate_limits.enforce("GET", "/status", None, client_ip, rate_limit)
        except ApiError as exc:
            response: Response = error_response(
                exc.status_code, exc.code, exc.message, exc.details, exc.headers
            )
        else:
            response = JSONResponse(await edge.status())
        response.raw_headers.extend(rate_limit)
        return response

    @app.get("/ready")
    async def ready() -> JSONResponse:
        checks = await edge.readiness()
        ok = all(value in ("ok", "not_used") for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks}, 200 if ok else 503
        )

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/openapi.json")
    async def openapi() -> dict[str, Any]:
        return await edge.openapi.document()

    @app.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Lyceum API",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="Lyceum API")

    instrument_app(app)
    return app
