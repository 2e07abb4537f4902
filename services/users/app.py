from fastapi import FastAPI

from services.users import events
from services.users.deps import UsersCollaborators
from services.users.models import ProcessedEvent
from services.users.routes import router
from services.users.settings import UsersSettings
from shared.body_limit import RouteBodyLimit
from shared.service import ServiceDefinition, create_service_app

# A few known keys with short values: a body larger than this is not preferences.
PREFERENCES_MAX_BYTES = 4096


def body_limits(_settings: UsersSettings) -> list[RouteBodyLimit]:
    return [("*", "/api/v1/users/me/preferences", PREFERENCES_MAX_BYTES)]


def create_app(settings: UsersSettings | None = None) -> FastAPI:
    settings = settings or UsersSettings()
    definition = ServiceDefinition(
        name="users",
        title="Lyceum users",
        routers=[router],
        collaborators=UsersCollaborators,
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
        body_limits=body_limits,
    )
    return create_service_app(definition, settings)
