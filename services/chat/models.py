import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import TimestampMixin, UTCDateTime, new_id, new_metadata, utcnow
from shared.events.consumer import ProcessedEventMixin
from shared.events.outbox import OutboxMixin


class Base(DeclarativeBase):
    metadata = new_metadata()


class Conversation(TimestampMixin, Base):
    """A user's conversation. Its messages form a tree (regenerated replies are siblings);
    `current_message_id` is the last message of the branch the user is on."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_activity", "user_id", "last_activity_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    # Until the user names it, the title follows the first message.
    title_is_automatic: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    prompt: Mapped[str | None] = mapped_column(String(100))
    # What its messages do when they do not say: answer from the user's documents (only
    # those of `document_ids`, ids as text, when set).
    use_documents: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    document_ids: Mapped[list[str] | None] = mapped_column(JSON)
    current_message_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    last_activity_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow
    )


class Message(TimestampMixin, Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_created", "conversation_id", "created_at"),
        Index("ix_messages_user_role_created", "user_id", "role", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False, default="")
    model: Mapped[str] = mapped_column(String(200), nullable=False)
    # user messages: "completed"; replies: generating, completed, stopped or failed.
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="completed")
    finish_reason: Mapped[str | None] = mapped_column(String(40))
    error_code: Mapped[str | None] = mapped_column(String(40))
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    prompt_name: Mapped[str | None] = mapped_column(String(100))
    prompt_version: Mapped[int | None] = mapped_column(Integer)
    # user messages: whether they were asked of the user's documents (and which), so that
    # a regenerated reply is asked the same way.
    use_documents: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    document_ids: Mapped[list[str] | None] = mapped_column(JSON)
    # replies: the sources they were given, in their numbers' order (`sources.citation`).
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class Prompt(TimestampMixin, Base):
    __tablename__ = "prompts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    latest_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class PromptVersion(Base):
    """Immutable once written."""

    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("prompt_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    prompt_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("prompts.id", ondelete="CASCADE"), nullable=False
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class PromptLabel(Base):
    """A movable name (`production`, `staging`, ...) for one version of a prompt."""

    __tablename__ = "prompt_labels"

    prompt_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(50), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class DailyUsage(Base):
    """Tokens a user spent on one UTC day: the ledger the quota reads. It outlives the
    messages, so deleting a conversation gives no tokens back."""

    __tablename__ = "daily_usage"

    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    replies: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class OutboxEvent(OutboxMixin, Base):
    __tablename__ = "outbox"


class ProcessedEvent(ProcessedEventMixin, Base):
    __tablename__ = "processed_events"
