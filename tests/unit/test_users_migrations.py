"""Users' migration to email verification and preferences (0003), on SQLite and PostgreSQL:
the profiles already there stay (unverified, nothing pending, default preferences), the new
columns and table take what the service writes, the schema is the models' at head, and the
migration goes back down."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Boolean, Connection, String, Uuid, column, delete, table
from sqlalchemy.ext.asyncio import create_async_engine

from services.users.models import Base, Preferences, Profile
from shared.db import Database, UTCDateTime, utcnow
from shared.registry import USERS
from tests.databases import migrate as migrate_service
from tests.databases import schema_differences, scratch_database_url

BEFORE = "0002"
PREFERENCES = "0003"
OLD_PROFILES = table(
    "profiles",
    column("id", Uuid()),
    column("email", String()),
    column("name", String()),
    column("role", String()),
    column("is_active", Boolean()),
    column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()),
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database_url(request.param, tmp_path, "users") as url:
        yield url


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    await migrate_service(USERS, url, revision, down=down)


def differences(connection: Connection) -> list[object]:
    return schema_differences(connection, Base.metadata)


async def test_preferences_migrate_up_with_profiles_in_place_and_back_down(
    database_url: str,
) -> None:
    await migrate(database_url, BEFORE)
    user_id = uuid.uuid4()
    now = utcnow()
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                OLD_PROFILES.insert().values(
                    id=user_id,
                    email="old@example.com",
                    name="Old",
                    role="student",
                    is_active=True,
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        await engine.dispose()

    await migrate(database_url, "head")
    database = Database(database_url)
    try:
        async with database.engine.connect() as connection:
            assert await connection.run_sync(differences) == []
        async with database.unit_of_work() as session:
            profile = await session.get(Profile, user_id)
            assert profile is not None
            assert (profile.email_verified, profile.pending_email) == (False, None)
            assert await session.get(Preferences, user_id) is None
            profile.email_verified = True
            profile.pending_email = "new@example.com"
            session.add(Preferences(user_id=user_id, data={"theme": "dark"}))
        async with database.unit_of_work() as session:
            profile = await session.get(Profile, user_id)
            preferences = await session.get(Preferences, user_id)
            assert profile is not None
            assert preferences is not None
            assert (profile.email_verified, profile.pending_email) == (True, "new@example.com")
            assert preferences.data == {"theme": "dark"}
        # Preferences go with their profile.
        async with database.unit_of_work() as session:
            await session.execute(delete(Profile).where(Profile.id == user_id))
        async with database.unit_of_work() as session:
            assert await session.get(Preferences, user_id) is None
    finally:
        await database.dispose()

    await migrate(database_url, BEFORE, down=True)
    await migrate(database_url, PREFERENCES)
