"""What users learns from auth (`user.created`) and publishes (`user.updated`, `user.deleted`)."""

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.users.models import OutboxEvent, Profile
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


async def on_user_created(
    session: AsyncSession, event: CloudEvent, _collaborators: Collaborators[Any]
) -> None:
    profile_id = uuid.UUID(event.data["id"])
    if await session.get(Profile, profile_id) is not None:
        return
    session.add(
        Profile(
            id=profile_id,
            email=event.data["email"],
            name=event.data["name"],
            role=event.data["role"],
        )
    )


handlers: dict[str, DomainHandler[Collaborators[Any]]] = {"user.created": on_user_created}
