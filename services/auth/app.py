from fastapi import FastAPI

from services.auth import events
from services.auth.deps import AuthCollaborators
from services.auth.models import ProcessedEvent
from services.auth.routes import routers
from services.auth.settings import AuthSettings
from shared.service import ServiceDefinition, create_service_app


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()
    definition = ServiceDefinition(
        name="auth",
        title="Lyceum auth",
        routers=routers,
        collaborators=AuthCollaborators,
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
    )
    return create_service_app(definition, settings)
