import uuid
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, Text, Uuid, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import TimestampMixin, new_metadata
from shared.events.consumer import ProcessedEventMixin
from shared.events.outbox import OutboxMixin


class Base(DeclarativeBase):
    metadata = new_metadata()


class Profile(TimestampMixin, Base):
    """A user's profile; its id is the account id that auth announced in `user.created`.

    `email` is the account's confirmed address: it changes when auth says so
    (`user.email_changed`), and until then an address waiting for its owner's confirmation
    is `pending_email`."""

    __tablename__ = "profiles"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), index=True, nullable=False)
    role: Mapped[str] = mapped_column(String(20), index=True, nullable=False)
    bio: Mapped[str | None] = mapped_column(Text)
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    is_active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    email_verified: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    pending_email: Mapped[str | None] = mapped_column(String(320))


class Preferences(TimestampMixin, Base):
    """The preferences a user has set (only those: the others are the defaults); gone with
    the profile."""

    __tablename__ = "preferences"

    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class OutboxEvent(OutboxMixin, Base):
    __tablename__ = "outbox"


class ProcessedEvent(ProcessedEventMixin, Base):
    __tablename__ = "processed_events"
