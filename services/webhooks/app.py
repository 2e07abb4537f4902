import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI

from services.webhooks import events
from services.webhooks.dispatcher import Dispatcher
from services.webhooks.models import ProcessedEvent
from services.webhooks.routes import router
from services.webhooks.settings import WebhooksSettings
from services.webhooks.url_safety import Resolver
from shared.service import ServiceDefinition, create_service_app


def create_app(settings: WebhooksSettings | None = None) -> FastAPI:
    settings = settings or WebhooksSettings()
    definition = ServiceDefinition(
        name="webhooks",
        title="Lyceum webhooks",
        routers=[router],
        migrations_dir=Path(__file__).parent / "migrations",
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
    )
    app = create_service_app(definition, settings)
    service_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """The service's own lifespan, with the dispatcher running inside it."""
        async with service_lifespan(app):
            resolver = Resolver(
                threads=settings.webhook_dns_threads,
                per_host=settings.webhook_dns_per_host,
                timeout_seconds=settings.webhook_dns_timeout_seconds,
            )
            app.state.webhook_resolver = resolver
            dispatcher = Dispatcher(app.state.database, settings, resolver)
            dispatcher.start()
            try:
                yield
            finally:
                await dispatcher.stop()
                resolver.close()

    app.router.lifespan_context = lifespan
    return app
