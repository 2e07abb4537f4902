"""What users learns from auth, through its consumer, on SQLite and PostgreSQL: a profile from
`user.created` (made once, whether an admin's request made it first or not), the address a
user confirmed from `user.email_changed` (published again as `user.updated`), and a verified
address from `user.email_verified`."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from services.users import events
from services.users.events import ensure_profile
from services.users.models import OutboxEvent, ProcessedEvent, Profile
from shared.db import Database
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import EventConsumer
from shared.migrations import upgrade_to_head_async
from shared.registry import USERS
from tests.databases import scratch_database_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with scratch_database_url(request.param, tmp_path, "users_events") as url:
        await upgrade_to_head_async(USERS.migrations_dir, url)
        database = Database(url)
        try:
            yield database
        finally:
            await database.dispose()


def consumer(database: Database) -> EventConsumer[Any]:
    return EventConsumer(database, ProcessedEvent, "test.users", events.handlers, None)


def auth_event(event_type: str, **data: Any) -> CloudEvent:
    return CloudEvent(
        source="lyceum/auth", type=event_type, subject=f"users/{data['id']}", data=data
    )


def created(user_id: uuid.UUID, email: str, **extra: Any) -> CloudEvent:
    return auth_event(
        "user.created", id=str(user_id), email=email, name="Ada", role="student", **extra
    )


async def profile_of(database: Database, user_id: uuid.UUID) -> Profile:
    async with database.unit_of_work() as session:
        profile = await session.get(Profile, user_id)
    assert profile is not None
    return profile


async def user_updated_events(database: Database) -> list[dict[str, Any]]:
    async with database.unit_of_work() as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.created_at))).all()
    payloads = [json.loads(row.payload) for row in rows]
    return [payload["data"] for payload in payloads if payload["type"] == "user.updated"]


def test_the_consumed_types_are_bound_for_the_queue() -> None:
    assert set(USERS.routing_keys) == {"user.created", "user.email_changed", "user.email_verified"}


async def test_a_profile_starts_unverified_unless_the_event_says_otherwise(
    database: Database,
) -> None:
    plain, verified = uuid.uuid4(), uuid.uuid4()
    await consumer(database).handle(created(plain, f"{plain}@example.com"), {})
    await consumer(database).handle(
        created(verified, f"{verified}@example.com", email_verified=True), {}
    )
    assert (await profile_of(database, plain)).email_verified is False
    assert (await profile_of(database, verified)).email_verified is True


async def test_user_created_after_an_admin_made_the_profile_changes_nothing(
    database: Database,
) -> None:
    user_id = uuid.uuid4()
    email = f"{user_id}@school.test"
    async with database.unit_of_work() as session:
        await ensure_profile(
            session, user_id, email=email, name="Ada", role="instructor", email_verified=False
        )
    first = await profile_of(database, user_id)
    event = created(user_id, email)
    await consumer(database).handle(event, {})
    await consumer(database).handle(event, {})  # redelivered
    again = await profile_of(database, user_id)
    assert (again.role, again.updated_at) == ("instructor", first.updated_at)
    async with database.unit_of_work() as session:
        count = await session.scalar(select(func.count()).where(Profile.email == email))
        assert count == 1
        assert await session.get(ProcessedEvent, event.id) is not None


async def test_the_admins_request_and_the_consumer_at_once_make_one_profile(
    database: Database,
) -> None:
    user_id = uuid.uuid4()
    email = f"{user_id}@example.com"

    async def by_request() -> Profile:
        async with database.unit_of_work() as session:
            return await ensure_profile(
                session, user_id, email=email, name="Ada", role="student", email_verified=False
            )

    profile, _ = await asyncio.gather(
        by_request(), consumer(database).handle(created(user_id, email), {})
    )
    assert profile.id == user_id
    assert (await profile_of(database, user_id)).email == email


async def test_a_confirmed_email_change_updates_the_profile_and_is_published(
    database: Database,
) -> None:
    user_id = uuid.uuid4()
    old, new = f"old-{user_id}@example.com", f"new-{user_id}@example.com"
    await consumer(database).handle(created(user_id, old), {})
    async with database.unit_of_work() as session:
        profile = await session.get(Profile, user_id)
        assert profile is not None
        profile.pending_email = new

    changed = auth_event("user.email_changed", id=str(user_id), email=new, previous_email=old)
    await consumer(database).handle(changed, {})
    await consumer(database).handle(changed, {})  # redelivered: published once
    profile = await profile_of(database, user_id)
    assert (profile.email, profile.pending_email, profile.email_verified) == (new, None, True)
    (updated,) = await user_updated_events(database)
    assert updated == {
        "id": str(user_id),
        "email": new,
        "name": "Ada",
        "role": "student",
        "is_active": True,
        "changed": ["email"],
    }


async def test_a_later_request_stays_pending_when_an_earlier_one_is_confirmed(
    database: Database,
) -> None:
    user_id = uuid.uuid4()
    old, first, second = (f"{tag}-{user_id}@example.com" for tag in ("old", "first", "second"))
    await consumer(database).handle(created(user_id, old), {})
    async with database.unit_of_work() as session:
        profile = await session.get(Profile, user_id)
        assert profile is not None
        profile.pending_email = second
    await consumer(database).handle(
        auth_event("user.email_changed", id=str(user_id), email=first, previous_email=old), {}
    )
    profile = await profile_of(database, user_id)
    assert (profile.email, profile.pending_email) == (first, second)


async def test_email_verified_verifies_the_current_address_only(database: Database) -> None:
    user_id = uuid.uuid4()
    email = f"{user_id}@example.com"
    await consumer(database).handle(created(user_id, email), {})
    await consumer(database).handle(
        auth_event("user.email_verified", id=str(user_id), email=f"other-{email}"), {}
    )
    assert (await profile_of(database, user_id)).email_verified is False
    await consumer(database).handle(
        auth_event("user.email_verified", id=str(user_id), email=email.upper()), {}
    )
    assert (await profile_of(database, user_id)).email_verified is True
    assert await user_updated_events(database) == []


async def test_events_about_a_profile_that_is_gone_are_ignored(database: Database) -> None:
    user_id = str(uuid.uuid4())
    await consumer(database).handle(
        auth_event(
            "user.email_changed", id=user_id, email="a@example.com", previous_email="b@x.com"
        ),
        {},
    )
    await consumer(database).handle(
        auth_event("user.email_verified", id=user_id, email="a@example.com"), {}
    )
    assert await user_updated_events(database) == []
