from fastapi import FastAPI

from services.documents import events
from services.documents.deps import DocumentsCollaborators
from services.documents.models import ProcessedEvent
from services.documents.routes import routers
from services.documents.settings import DocumentsSettings
from shared.body_limit import RouteBodyLimit
from shared.service import ServiceDefinition, create_service_app


def upload_limits(settings: DocumentsSettings) -> list[RouteBodyLimit]:
    """Uploads may be as large as a document; every other request keeps the small limit."""
    limit = settings.max_upload_body_bytes
    return [("POST", "/api/v1/documents", limit), ("POST", "/api/v1/files/upload", limit)]


def create_app(settings: DocumentsSettings | None = None) -> FastAPI:
    settings = settings or DocumentsSettings()
    definition = ServiceDefinition(
        name="documents",
        title="Lyceum documents",
        routers=routers,
        collaborators=DocumentsCollaborators,
        outbox=events.outbox,
        processed_events=ProcessedEvent,
        event_handlers=events.handlers,
        body_limits=upload_limits,
    )
    return create_service_app(definition, settings)
