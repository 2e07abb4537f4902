import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from gateway.proxy import Proxy
from gateway.routing import RouteTable
from gateway.settings import GatewaySettings
from shared.errors import install_error_handlers
from shared.logging import configure_logging, get_logger
from shared.request_id import RequestIdMiddleware
from shared.revocation import MemoryRevocationStore, revocation_store
from shared.security import JwksKeySource, TokenVerifier
from shared.telemetry import configure_tracing

log = get_logger(__name__)

PROXIED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    routes = RouteTable(settings.routes, settings.upstreams, settings.public_routes)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("gateway", settings.log_level, settings.log_json)
        configure_tracing("gateway")
        revocations = revocation_store(settings.redis_url, f"{settings.queue_prefix}:revoked")
        verifier = TokenVerifier(
            JwksKeySource(settings.jwks_url),
            revocations,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            leeway_seconds=settings.jwt_leeway_seconds,
        )
        app.state.revocations = revocations
        app.state.proxy = Proxy(settings, routes, verifier)
        log.info("gateway_started", port=settings.port, upstreams=settings.upstreams)
        try:
            yield
        finally:
            await app.state.proxy.close()
            if not isinstance(revocations, MemoryRevocationStore):
                await revocations.close()

    app = FastAPI(
        title="Lyceum gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        proxy: Proxy = request.app.state.proxy
        checks: dict[str, str] = {}
        for upstream in routes.upstreams.values():
            try:
                answer = await proxy.client.get(f"{upstream.url}/health", timeout=2.0)
                checks[upstream.name] = "ok" if answer.status_code == 200 else "unavailable"
            except Exception:
                checks[upstream.name] = "unavailable"
        checks["revocation_store"] = (
            "ok" if await request.app.state.revocations.ping() else "unavailable"
        )
        ok = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks}, 200 if ok else 503
        )

    @app.api_route("/{path:path}", methods=PROXIED_METHODS, include_in_schema=False)
    async def proxy(request: Request) -> Response:
        handler: Proxy = request.app.state.proxy
        return await handler.handle(request)

    return app
