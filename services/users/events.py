"""What users learns from auth (`user.created`, `user.email_changed`, `user.email_verified`)
and publishes (`user.updated`, `user.deleted`)."""

import uuid
from typing import Any

from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.users.models import OutboxEvent, Profile
from shared.db import is_sqlite
from shared.errors import Conflict
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import DomainHandler
from shared.events.outbox import Outbox
from shared.service import Collaborators

outbox = Outbox(OutboxEvent, source="lyceum/users")


def user_data(profile: Profile) -> dict[str, Any]:
    return {
        "id": str(profile.id),
        "email": profile.email,
        "name": profile.name,
        "role": profile.role,
        "is_active": profile.is_active,
    }


def record_user_updated(session: AsyncSession, profile: Profile, changed: list[str]) -> None:
    data = user_data(profile) | {"changed": changed}
    outbox.add(session, "user.updated", f"users/{profile.id}", data)


def record_user_deleted(session: AsyncSession, profile: Profile) -> None:
    outbox.add(session, "user.deleted", f"users/{profile.id}", {"id": str(profile.id)})


async def ensure_profile(
    session: AsyncSession,
    profile_id: uuid.UUID,
    *,
    email: str,
    name: str,
    role: str,
    email_verified: bool,
    is_active: bool = True,
) -> Profile:
    """The account's profile, created unless it exists: an admin's `POST /users` and the
    `user.created` consumer both make it, in either order or at once. Every unique column
    is an arbiter: on PostgreSQL, two inserts at once would otherwise collide on `email`."""
    insert = sqlite_insert if is_sqlite(session) else postgresql_insert
    statement = (
        insert(Profile)
        .values(
            id=profile_id,
            email=email,
            name=name,
            role=role,
            email_verified=email_verified,
            is_active=is_active,
        )
        .on_conflict_do_nothing()
    )
    await session.execute(statement)
    profile = await session.get(Profile, profile_id)
    if profile is None:
        raise Conflict(
            "Another profile has this email",
            details={"field": "email", "issue": "belongs to another profile"},
        )
    return profile


async def on_user_created(
    session: AsyncSession, event: CloudEvent, _collaborators: Collaborators[Any]
) -> None:
    await ensure_profile(
        session,
        uuid.UUID(event.data["id"]),
        email=event.data["email"],
        name=event.data["name"],
        role=event.data["role"],
        email_verified=event.data.get("email_verified") is True,
    )


async def on_user_email_changed(
    session: AsyncSession, event: CloudEvent, _collaborators: Collaborators[Any]
) -> None:
    """Its owner confirmed the new address: it is the profile's, and verified."""
    profile = await session.get(Profile, uuid.UUID(event.data["id"]))
    if profile is None:
        return
    email: str = event.data["email"]
    if profile.pending_email is not None and profile.pending_email.lower() == email.lower():
        profile.pending_email = None
    profile.email_verified = True
    if profile.email != email:
        profile.email = email
        record_user_updated(session, profile, ["email"])
    await session.flush()


async def on_user_email_verified(
    session: AsyncSession, event: CloudEvent, _collaborators: Collaborators[Any]
) -> None:
    """Verifies the profile's address, if it is still the one verified."""
    profile = await session.get(Profile, uuid.UUID(event.data["id"]))
    if profile is not None and profile.email.lower() == str(event.data["email"]).lower():
        profile.email_verified = True
        await session.flush()


handlers: dict[str, DomainHandler[Collaborators[Any]]] = {
    "user.created": on_user_created,
    "user.email_changed": on_user_email_changed,
    "user.email_verified": on_user_email_verified,
}
