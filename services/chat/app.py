from fastapi import FastAPI

from services.chat import events
from services.chat.deps import ChatCollaborators
from services.chat.models import ProcessedEvent
from services.chat.openapi import document_models
from services.chat.routes import routers
from services.chat.settings import ChatSettings
from shared.service import ServiceDefinition, create_service_app


def create_app(settings: ChatSettings | None = None) -> FastAPI:
    settings = settings or ChatSettings()
    definition = ServiceDefinition(
        name="chat",
        title="Lyceum chat",
        routers=routers,
        collaborators=ChatCollaborators,
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
    )
    app = create_service_app(definition, settings)
    document_models(app, settings)
    return app
