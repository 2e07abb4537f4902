import uuid
from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import TimestampMixin, UTCDateTime, new_id, new_metadata, utcnow
from shared.events.consumer import ProcessedEventMixin
from shared.events.outbox import OutboxMixin

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"
# The `disabled_reason` of an endpoint an admin disabled; the dispatcher gives its own.
DISABLED_BY_ADMIN = "Disabled by an administrator"


class Base(DeclarativeBase):
    metadata = new_metadata()


class Endpoint(TimestampMixin, Base):
    """An outside URL that receives the events its filters match, signed with its secret."""

    __tablename__ = "endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    description: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, index=True)
    secret: Mapped[str] = mapped_column(String(100), nullable=False)
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Since when every attempt has failed; cleared by any success.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(String(200))


class Message(Base):
    """One event as it goes out: the signed body is the same for every endpoint and retry."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    # The trace of what caused the message, which each attempt continues.
    traceparent: Mapped[str | None] = mapped_column(String(55))


class Delivery(TimestampMixin, Base):
    """One message to one endpoint: pending until an attempt succeeds or retries run out."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # Each endpoint's due deliveries, for claims that take a few of every endpoint. No
        # other index has the status: every other query names an endpoint or a delivery.
        Index(
            "ix_deliveries_pending_by_endpoint",
            "endpoint_id",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), nullable=False, index=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), nullable=False, index=True
    )
    status: Mapped[str] = mapped_column(String(20), nullable=False, default=PENDING)
    attempt_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When the next attempt is due; while one is in flight, when its claim lapses.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by the worker that claimed the delivery for an attempt; only that worker records
    # the attempt's outcome on the delivery, and only while the token is still this one.
    claim_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    message: Mapped[Message] = relationship(lazy="raise")
    attempts: Mapped[list["Attempt"]] = relationship(
        lazy="raise", order_by="Attempt.attempted_at", cascade="all, delete-orphan"
    )


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False, index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    error: Mapped[str | None] = mapped_column(String(500))


class OutboxEvent(OutboxMixin, Base):
    __tablename__ = "outbox"


class ProcessedEvent(ProcessedEventMixin, Base):
    __tablename__ = "processed_events"
