"""What documents publishes (`document.uploaded`, `document.processed`, `document.deleted`)
and what it learns (`user.deleted`: the user's documents and their stored files go)."""

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.documents.models import Document, OutboxEvent
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import DomainHandler
from shared.events.outbox import Outbox
from shared.logging import get_logger

if TYPE_CHECKING:
    from services.documents.deps import DocumentsCollaborators

log = get_logger(__name__)

outbox = Outbox(OutboxEvent, source="lyceum/documents")


def _subject(document: Document) -> str:
    return f"documents/{document.id}"


def _time(document: Document, attribute: str) -> str | None:
    value = getattr(document, attribute)
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def record_document_uploaded(session: AsyncSession, document: Document) -> None:
    data = {
        "id": str(document.id),
        "user_id": str(document.user_id),
        "filename": document.filename,
        "title": document.title,
        "size": document.size,
        "mime_type": document.mime_type,
        "sha256": document.sha256,
        "created_at": _time(document, "created_at"),
    }
    outbox.add(session, "document.uploaded", _subject(document), data)


def record_document_processed(session: AsyncSession, document: Document) -> None:
    data = {
        "id": str(document.id),
        "user_id": str(document.user_id),
        "status": document.status,
        "failure_reason": document.failure_reason,
        "page_count": document.page_count,
        "chunk_count": document.chunk_count,
        "processed_at": _time(document, "processed_at"),
    }
    outbox.add(session, "document.processed", _subject(document), data)


def record_document_deleted(session: AsyncSession, document: Document) -> None:
    data = {"id": str(document.id), "user_id": str(document.user_id)}
    outbox.add(session, "document.deleted", _subject(document), data)


async def on_user_deleted(
    session: AsyncSession, event: CloudEvent, collaborators: "DocumentsCollaborators"
) -> None:
    """The stored files go first: a redelivered event finds the rows still there and
    deletes again, which removing a missing object allows."""
    user_id = uuid.UUID(event.data["id"])
    keys = (
        await session.scalars(select(Document.storage_key).where(Document.user_id == user_id))
    ).all()
    for key in keys:
        await collaborators.store.delete(key)
    await session.execute(delete(Document).where(Document.user_id == user_id))
    if keys:
        log.info("user_documents_deleted", user_id=str(user_id), documents=len(keys))


handlers: dict[str, DomainHandler[Any]] = {"user.deleted": on_user_deleted}
