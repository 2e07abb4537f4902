"""The one way a Lyceum service is assembled: the same lifespan, middleware and errors."""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from fastapi import APIRouter, FastAPI

from shared.body_limit import BodySizeLimitMiddleware
from shared.db import Database
from shared.errors import install_error_handlers
from shared.events import connect_bus
from shared.events.bus import Subscription
from shared.events.consumer import DomainHandler, EventConsumer, ProcessedEventMixin
from shared.events.inprocess import InProcessBus
from shared.events.outbox import Outbox, OutboxRelay
from shared.health import router as health_router
from shared.logging import configure_logging, get_logger
from shared.migrations import upgrade_to_head_async
from shared.request_id import RequestIdMiddleware
from shared.revocation import MemoryRevocationStore, revocation_store
from shared.security import JwksKeySource, KeySource, TokenVerifier
from shared.settings import ServiceSettings
from shared.telemetry import configure_tracing

log = get_logger(__name__)

StartupHook = Callable[[FastAPI], Awaitable[None]]


@dataclass
class ServiceDefinition:
    """What makes one service different from the others."""

    name: str
    title: str
    routers: list[APIRouter]
    migrations_dir: Path
    outbox: Outbox | None = None
    processed_events: type[ProcessedEventMixin] | None = None
    event_handlers: dict[str, DomainHandler] = field(default_factory=dict)
    on_startup: list[StartupHook] = field(default_factory=list)
    key_source: Callable[[FastAPI], KeySource] | None = None

    def subscription(self, settings: ServiceSettings) -> Subscription | None:
        if not self.event_handlers:
            return None
        return Subscription(f"{settings.queue_prefix}.{self.name}", tuple(self.event_handlers))


def create_service_app(definition: ServiceDefinition, settings: ServiceSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(definition.name, settings.log_level, settings.log_json)
        configure_tracing(definition.name)
        database_url = settings.resolved_database_url()
        await upgrade_to_head_async(definition.migrations_dir, database_url)
        database = Database(database_url)
        bus = connect_bus(settings)
        await bus.start()
        revocations = revocation_store(settings.redis_url, f"{settings.queue_prefix}:revoked")
        keys = (
            definition.key_source(app)
            if definition.key_source
            else JwksKeySource(
                settings.jwks_url,
                min_refresh_seconds=settings.jwks_min_refresh_seconds,
                max_age_seconds=settings.jwks_cache_seconds,
            )
        )
        app.state.database = database
        app.state.bus = bus
        app.state.revocations = revocations
        app.state.token_verifier = TokenVerifier(
            keys,
            revocations,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            leeway_seconds=settings.jwt_leeway_seconds,
        )
        app.state.readiness_checks = {
            "database": database.ping,
            "event_bus": bus.is_ready,
            "revocation_store": revocations.ping,
        }
        for hook in definition.on_startup:
            await hook(app)

        if definition.event_handlers:
            assert definition.processed_events is not None
            consumer = EventConsumer(
                database,
                definition.processed_events,
                f"{settings.queue_prefix}.{definition.name}",
                definition.event_handlers,
                app.state,
            )
            await bus.consume(consumer.subscription)
        relay = None
        if definition.outbox is not None:
            relay = OutboxRelay(
                database, definition.outbox, bus, poll_seconds=settings.outbox_poll_seconds
            )
            relay.start()
        log.info("service_started", port=settings.port)
        try:
            yield
        finally:
            if relay is not None:
                await relay.stop()
            if not isinstance(bus, InProcessBus):
                await bus.close()
            if not isinstance(revocations, MemoryRevocationStore):
                await revocations.close()
            await database.dispose()

    app = FastAPI(title=definition.title, version="1.0.0", lifespan=lifespan)
    app.state.settings = settings
    # Inside the error envelope and the request id, outside the routes' body parsing.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware, service=definition.name)
    app.include_router(health_router)
    for router in definition.routers:
        app.include_router(router)
    return app


def serve(factory: str, settings: ServiceSettings, *, workers: int = 1) -> None:
    """Runs one service under uvicorn; `factory` is the "module:create_app" path."""
    uvicorn.run(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
    )
