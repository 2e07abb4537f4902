from fastapi import FastAPI

from services.users import events
from services.users.models import ProcessedEvent
from services.users.routes import router
from services.users.settings import UsersSettings
from shared.service import ServiceDefinition, create_service_app


def create_app(settings: UsersSettings | None = None) -> FastAPI:
    settings = settings or UsersSettings()
    definition = ServiceDefinition(
        name="users",
        title="Lyceum users",
        routers=[router],
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
    )
    return create_service_app(definition, settings)
