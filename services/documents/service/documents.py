"""A user's documents: uploading, listing, reading, deleting and searching them. Every
lookup is scoped to the caller: someone else's document is not found."""

import functools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.documents import search as full_text
from services.documents.content_types import ALLOWED, detect
from services.documents.deps import DocumentsCollaborators
from services.documents.events import (
    record_document_deleted,
    record_document_uploaded,
)
from services.documents.models import PROCESSING, Document
from services.documents.processing import WORK_FLAG
from services.documents.schemas import DocumentSort, DocumentStatus, SearchRequest
from services.documents.settings import DocumentsSettings
from services.documents.upload import StorageQuotaExceeded, receive
from shared.db import Database, begin_writing, is_sqlite, new_id
from shared.errors import NotFound
from shared.pagination import PageParams, Pagination, SortOrder, order_by, paginate
from shared.security import Identity
from shared.wakeups import flag_work

SORTABLE = {"created_at": Document.created_at, "title": Document.title, "size": Document.size}


@dataclass(frozen=True)
class DocumentFilters:
    status: DocumentStatus | None = None
    mime_type: str | None = None
    search: str | None = None
    sort: DocumentSort = "created_at"
    order: SortOrder = "desc"


def storage_key(user_id: uuid.UUID, document_id: uuid.UUID) -> str:
    """Made by the service alone: the client's file name never reaches the store."""
    return f"documents/{user_id}/{document_id}"


async def stored_bytes(database: Database, user_id: uuid.UUID) -> int:
    async with database.unit_of_work() as session:
        used = await session.scalar(
            select(func.coalesce(func.sum(Document.size), 0)).where(Document.user_id == user_id)
        )
    return int(used or 0)


async def upload(
    session: AsyncSession,
    collaborators: DocumentsCollaborators,
    identity: Identity,
    body: AsyncIterator[bytes],
    content_type: str,
) -> Document:
    """Streams the multipart `body` into the store and records the document, to be processed
    once the request's transaction commits. Whatever fails, nothing stays behind."""
    settings = collaborators.settings
    quota_left = None
    if settings.documents_user_quota_bytes:
        used = await stored_bytes(collaborators.database, identity.user_id)
        quota_left = max(settings.documents_user_quota_bytes - used, 0)
    allowed = {kind: ALLOWED[kind] for kind in settings.allowed_types if kind in ALLOWED}
    document_id = new_id()
    key = storage_key(identity.user_id, document_id)
    received = await receive(
        body,
        content_type,
        store=collaborators.store,
        key=key,
        max_bytes=settings.documents_max_bytes,
        quota_left=quota_left,
        detect=functools.partial(detect, allowed=allowed),
    )
    try:
        await _check_quota(session, identity.user_id, received.size, settings)
        document = Document(
            id=document_id,
            user_id=identity.user_id,
            filename=received.filename,
            title=received.title or received.filename,
            size=received.size,
            mime_type=received.mime_type,
            sha256=received.sha256,
            storage_key=key,
            status=PROCESSING,
            chunk_count=0,
            processing_attempts=0,
        )
        session.add(document)
        await session.flush()
        record_document_uploaded(session, document)
        flag_work(session, WORK_FLAG)
    except BaseException:
        await collaborators.store.delete(key)
        raise
    return document


async def _check_quota(
    session: AsyncSession, user_id: uuid.UUID, size: int, settings: DocumentsSettings
) -> None:
    """Checked again once the file is stored, with the user's uploads serialised until the
    transaction ends, so that uploads running side by side cannot together pass the quota
    that each passed alone."""
    quota = settings.documents_user_quota_bytes
    if not quota:
        return
    if is_sqlite(session):
        await begin_writing(session)
    else:
        lock_key = int.from_bytes(user_id.bytes[:8], "big", signed=True)
        await session.execute(select(func.pg_advisory_xact_lock(lock_key)))
    used = await session.scalar(
        select(func.coalesce(func.sum(Document.size), 0)).where(Document.user_id == user_id)
    )
    left = max(quota - int(used or 0), 0)
    if size > left:
        raise StorageQuotaExceeded(
            "This upload would exceed your storage quota", details={"quota_left_bytes": left}
        )


def _owned(identity: Identity) -> Select[Document]:
    return select(Document).where(Document.user_id == identity.user_id)


async def list_documents(
    session: AsyncSession, identity: Identity, filters: DocumentFilters, page: PageParams
) -> tuple[list[Document], Pagination]:
    query = _owned(identity)
    if filters.status is not None:
        query = query.where(Document.status == filters.status)
    if filters.mime_type is not None:
        query = query.where(Document.mime_type == filters.mime_type)
    if filters.search:
        pattern = "%" + filters.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Document.title.ilike(pattern + "%", escape="\\"))
    query = query.order_by(order_by(SORTABLE, filters.sort, filters.order), Document.id)
    return await paginate(session, query, page)


async def count_and_slice(
    session: AsyncSession, identity: Identity, *, limit: int, offset: int
) -> tuple[list[Document], int]:
    """The file API's paging: newest first, by offset."""
    total = await session.scalar(
        select(func.count()).select_from(Document).where(Document.user_id == identity.user_id)
    )
    rows = await session.scalars(
        _owned(identity)
        .order_by(Document.created_at.desc(), Document.id)
        .offset(offset)
        .limit(limit)
    )
    return list(rows.all()), int(total or 0)


async def get_document(
    session: AsyncSession, identity: Identity, document_id: uuid.UUID
) -> Document:
    document = await session.scalar(_owned(identity).where(Document.id == document_id))
    if document is None:
        raise NotFound("Document not found")
    return document


async def delete_document(
    session: AsyncSession,
    collaborators: DocumentsCollaborators,
    identity: Identity,
    document_id: uuid.UUID,
) -> None:
    """The row goes with its chunks, then the stored file; the event commits with the row."""
    document = await get_document(session, identity, document_id)
    record_document_deleted(session, document)
    await session.execute(delete(Document).where(Document.id == document.id))
    await session.flush()
    await collaborators.store.delete(document.storage_key)


async def search_documents(
    session: AsyncSession, identity: Identity, request: SearchRequest
) -> list[full_text.Hit]:
    return await full_text.search(
        session,
        identity.user_id,
        request.query,
        limit=request.limit,
        document_ids=request.document_ids,
    )
