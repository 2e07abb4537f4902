"""The one way a Lyceum service is assembled: the same collaborators, lifespan, middleware
and errors.

A service's collaborators (database, bus, revocation store, token verifier, and whatever the
service adds) are built once, in one typed object with `start` and `stop`. Routes reach it
through the `Annotated` aliases of `shared.deps` (or the service's own `deps.py`); event
handlers receive it as their third argument.
"""

import contextlib
import math
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

import uvicorn
from fastapi import APIRouter, FastAPI
from typing_extensions import TypeVar
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from shared import metrics
from shared.body_limit import BodySizeLimitMiddleware, RouteBodyLimit
from shared.db import Database
from shared.errors import install_error_handlers
from shared.events import connect_bus
from shared.events.bus import EventBus, Subscription
from shared.events.consumer import DomainHandler, EventConsumer, ProcessedEventMixin
from shared.events.inprocess import InProcessBus
from shared.events.outbox import Outbox, OutboxRelay
from shared.health import ReadinessCheck, observe
from shared.health import router as health_router
from shared.heap import freeze_startup_objects
from shared.http_metrics import HttpMetricsMiddleware
from shared.logging import configure_logging, get_logger
from shared.openapi import install_openapi
from shared.request_id import RequestIdMiddleware
from shared.revocation import MemoryRevocationStore, RevocationStore, revocation_store
from shared.security import JwksKeySource, KeySource, TokenVerifier
from shared.settings import ServiceSettings
from shared.shutdown import SHUTDOWN_STATE, GracefulServer, Shutdown, bind_socket
from shared.telemetry import (
    TraceContextMiddleware,
    configure_tracing,
    flush_spans,
    instrument_app,
)

log = get_logger(__name__)

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


class Collaborators(Generic[SettingsT]):
    """What every service is built on. A service with more (auth's key ring, the webhook
    dispatcher) subclasses it, builds its own in `__init__` and extends `start`/`stop`."""

    def __init__(self, settings: SettingsT, *, key_source: KeySource | None = None) -> None:
        self.settings = settings
        self.database = Database(settings.resolved_database_url())
        self.bus: EventBus = connect_bus(settings)
        self.revocations: RevocationStore = revocation_store(
            settings.redis_url, f"{settings.queue_prefix}:revoked"
        )
        self.token_verifier = TokenVerifier(
            key_source
            or JwksKeySource(
                settings.jwks_url,
                min_refresh_seconds=settings.jwks_min_refresh_seconds,
                max_age_seconds=settings.jwks_cache_seconds,
            ),
            self.revocations,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            leeway_seconds=settings.jwt_leeway_seconds,
        )
        # SIGTERM's course through the service (shared/shutdown.py); a service with more to
        # end before its connections close adds a drain hook.
        self.shutdown = Shutdown(settings.shutdown_grace_seconds)

    def readiness_checks(self) -> dict[str, ReadinessCheck]:
        return {
            "database": self.database.ping,
            "event_bus": self.bus.is_ready,
            "revocation_store": self.revocations.ping,
            "accepting_requests": self.shutdown.accepting,
        }

    async def start(self) -> None:
        await self.bus.start()

    async def stop(self) -> None:
        # The embedded mode's bus and in-memory store are shared by every service of the
        # process: the launcher closes them, not one service.
        if not isinstance(self.bus, InProcessBus):
            await self.bus.close()
        if not isinstance(self.revocations, MemoryRevocationStore):
            await self.revocations.close()
        await self.database.dispose()


CollaboratorsT = TypeVar(
    "CollaboratorsT", bound=Collaborators[Any], default=Collaborators[ServiceSettings]
)


@dataclass
class ServiceDefinition(Generic[CollaboratorsT]):
    """What makes one service different from the others."""

    name: str
    title: str
    routers: list[APIRouter]
    collaborators: Callable[[Any], CollaboratorsT] = Collaborators  # type: ignore[assignment]
    outbox: Outbox | None = None
    processed_events: type[ProcessedEventMixin] | None = None
    event_handlers: Mapping[str, DomainHandler[CollaboratorsT]] = field(default_factory=dict)
    # The routes whose bodies may differ from MAX_BODY_BYTES (uploads), from the settings:
    # `lambda settings: [("POST", "/api/v1/documents", settings.max_upload_body_bytes)]`.
    body_limits: Callable[[Any], Sequence[RouteBodyLimit]] | None = None

    def subscription(self, settings: ServiceSettings) -> Subscription | None:
        if not self.event_handlers:
            return None
        return Subscription(f"{settings.queue_prefix}.{self.name}", tuple(self.event_handlers))


def create_service_app(
    definition: ServiceDefinition[CollaboratorsT], settings: ServiceSettings
) -> FastAPI:
    """The schema is migrated before the service starts (`python -m services.<name> migrate`,
    which `make run` and the deployments run first), never by the service itself."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        configure_logging(definition.name, settings.log_level, settings.log_format)
        collaborators = definition.collaborators(settings)
        await collaborators.start()
        app.state.collaborators = collaborators
        metrics.add_refresher(
            collaborators,
            observe(definition.name, collaborators.readiness_checks, collaborators.database),
        )
        try:
            if definition.event_handlers:
                assert definition.processed_events is not None
                consumer = EventConsumer(
                    collaborators.database,
                    definition.processed_events,
                    f"{settings.queue_prefix}.{definition.name}",
                    definition.event_handlers,
                    collaborators,
                )
                await collaborators.bus.consume(consumer.subscription)
                collaborators.shutdown.on_drain(lambda: _stop_consuming(collaborators.bus))
            relay = None
            if definition.outbox is not None:
                relay = OutboxRelay(
                    collaborators.database,
                    definition.outbox,
                    collaborators.bus,
                    poll_seconds=settings.outbox_poll_seconds,
                    max_attempts=settings.outbox_max_attempts,
                    retry_seconds=settings.outbox_retry_seconds,
                    retry_max_seconds=settings.outbox_retry_max_seconds,
                )
                relay.start()
            freeze_startup_objects()
            log.info("service_started", port=settings.port)
            try:
                yield {SHUTDOWN_STATE: collaborators.shutdown}
            finally:
                # Drained already when the shutdown came through GracefulServer.
                await collaborators.shutdown.drain()
                if relay is not None:
                    await relay.stop(grace_seconds=collaborators.shutdown.remaining())
        finally:
            metrics.remove_refresher(collaborators)
            await collaborators.stop()
            await flush_spans()

    configure_tracing(definition.name)
    app = FastAPI(
        title=definition.title,
        version="1.0.0",
        lifespan=lifespan,
        # Exporting is shared.telemetry's set-up (configure_tracing).
        telemetry={"auto_configure": False},
    )
    app.state.settings = settings
    # Inside the error envelope and the request id, outside the routes' body parsing.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        route_limits=definition.body_limits(settings) if definition.body_limits else (),
    )
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(HttpMetricsMiddleware, service=definition.name)
    app.add_middleware(RequestIdMiddleware, service=definition.name)
    app.add_middleware(TraceContextMiddleware)
    app.include_router(health_router)
    for router in definition.routers:
        app.include_router(router)
    instrument_app(app)
    return app


# How long a process keeps an idle client connection open. Longer than any proxy in
# front of it keeps one idle in its pool (the gateway: 30 s, gateway/edge.py),
# so that the proxy never sends a request down a connection the server is closing.
KEEP_ALIVE_SECONDS = 75

# How every Lyceum process runs uvicorn (uvloop and httptools, uvicorn's "auto" choices,
# when installed); the access log is RequestIdMiddleware's, not uvicorn's.
UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "proxy_headers": False,
    "server_header": False,
    "date_header": False,
    "timeout_keep_alive": KEEP_ALIVE_SECONDS,
}


def serve(factory: str, settings: ServiceSettings, *, workers: int = 1) -> None:
    """Runs one service under uvicorn; `factory` is the "module:create_app" path.

    One worker (as each replica of a deployment runs) shuts down as shared/shutdown.py
    says. Several run under uvicorn's supervisor: on SIGTERM their requests in flight still
    finish within SHUTDOWN_GRACE_SECONDS, but nothing is drained before the listener closes
    (chat's streams end when the grace runs out)."""
    metrics.share_between_workers(workers)
    config = uvicorn.Config(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        **UVICORN_OPTIONS,
    )
    sockets = None
    if settings.reuse_port or workers > 1:
        sockets = [bind_socket(settings.host, settings.port, reuse_port=settings.reuse_port)]
    if workers > 1:
        assert sockets is not None
        Multiprocess(config, sockets=sockets).run()
        return
    server = GracefulServer(
        config,
        delay_seconds=settings.shutdown_delay_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


async def _stop_consuming(bus: EventBus) -> None:
    # The embedded mode's bus is shared by every service of the process: the launcher
    # stops it, not one service.
    if not isinstance(bus, InProcessBus):
        await bus.stop_consuming()
