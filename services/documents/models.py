import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import TimestampMixin, UTCDateTime, new_id, new_metadata
from shared.events.consumer import ProcessedEventMixin
from shared.events.outbox import OutboxMixin

# Document.status
PROCESSING = "processing"
READY = "ready"
FAILED = "failed"
STATUSES = (PROCESSING, READY, FAILED)


class Base(DeclarativeBase):
    metadata = new_metadata()


class Document(TimestampMixin, Base):
    """An uploaded file of one user. Its bytes live in the object store under
    `storage_key`; its text, once extracted, lives in `chunks`. Only `ready` documents
    are searched."""

    __tablename__ = "documents"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    mime_type: Mapped[str] = mapped_column(String(100), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    storage_key: Mapped[str] = mapped_column(String(300), nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=PROCESSING, index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int | None] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A processing worker holds the document until then; past it another worker may take it.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # How many times processing was started: a file that kills its worker is not retried
    # forever.
    processing_attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Chunk(Base):
    """A passage of a document's text, the unit of search. On PostgreSQL the table also
    has a generated `search_vector` column, on SQLite an FTS5 index `chunks_fts` kept in
    sync by triggers (migration 0002); neither is mapped here."""

    __tablename__ = "chunks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    document_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("documents.id", ondelete="CASCADE"), nullable=False, index=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    page: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text, nullable=False)


class OutboxEvent(OutboxMixin, Base):
    __tablename__ = "outbox"


class ProcessedEvent(ProcessedEventMixin, Base):
    __tablename__ = "processed_events"
