from fastapi import FastAPI

from services.webhooks import events
from services.webhooks.deps import WebhooksCollaborators
from services.webhooks.models import ProcessedEvent
from services.webhooks.routes import router
from services.webhooks.settings import WebhooksSettings
from shared.service import ServiceDefinition, create_service_app


def create_app(settings: WebhooksSettings | None = None) -> FastAPI:
    settings = settings or WebhooksSettings()
    definition = ServiceDefinition(
        name="webhooks",
        title="Lyceum webhooks",
        routers=[router],
        collaborators=WebhooksCollaborators,
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
    )
    return create_service_app(definition, settings)
