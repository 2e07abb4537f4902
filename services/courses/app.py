from fastapi import FastAPI

from services.courses import events
from services.courses.models import ProcessedEvent
from services.courses.routes import routers
from services.courses.settings import CoursesSettings
from shared.service import ServiceDefinition, create_service_app


def create_app(settings: CoursesSettings | None = None) -> FastAPI:
    settings = settings or CoursesSettings()
    definition = ServiceDefinition(
        name="courses",
        title="Lyceum courses",
        routers=routers,
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
    )
    return create_service_app(definition, settings)
