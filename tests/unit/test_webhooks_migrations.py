"""Webhooks' migration to messages that keep their trace context (0005), on SQLite and
PostgreSQL: the messages already there stay (with none), the new column takes what the
service writes, the schema is the models' at head, and the migration goes back down."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, String, column, inspect, table
from sqlalchemy.ext.asyncio import create_async_engine

from services.webhooks.models import Base, Message
from shared.db import Database, UTCDateTime, utcnow
from shared.registry import WEBHOOKS
from tests.databases import migrate as migrate_service
from tests.databases import schema_differences, scratch_database_url

BEFORE = "0004"
TRACEPARENT = "0005"
OLD_MESSAGES = table(
    "messages",
    column("id", String()),
    column("event_type", String()),
    column("body", String()),
    column("created_at", UTCDateTime()),
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database_url(request.param, tmp_path, "webhooks") as url:
        yield url


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    await migrate_service(WEBHOOKS, url, revision, down=down)


def differences(connection: Connection) -> list[object]:
    return schema_differences(connection, Base.metadata)


def message_columns(connection: Connection) -> list[str]:
    return [c["name"] for c in inspect(connection).get_columns("messages")]


async def test_messages_keep_their_trace_context_after_the_migration_and_it_goes_back_down(
    database_url: str,
) -> None:
    await migrate(database_url, BEFORE)
    old_id, new_id = str(uuid.uuid4()), str(uuid.uuid4())
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                OLD_MESSAGES.insert().values(
                    id=old_id, event_type="user.created", body="{}", created_at=utcnow()
                )
            )
    finally:
        await engine.dispose()

    await migrate(database_url, "head")
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    database = Database(database_url)
    try:
        async with database.engine.connect() as connection:
            assert await connection.run_sync(differences) == []
        async with database.unit_of_work() as session:
            old = await session.get(Message, old_id)
            assert old is not None
            assert (old.event_type, old.traceparent) == ("user.created", None)
            session.add(
                Message(id=new_id, event_type="user.updated", body="{}", traceparent=traceparent)
            )
        async with database.sessions() as session:
            new = await session.get(Message, new_id)
            assert new is not None
            assert new.traceparent == traceparent
    finally:
        await database.dispose()

    await migrate(database_url, BEFORE, down=True)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(message_columns)
    finally:
        await engine.dispose()
    assert "traceparent" not in names
    assert {"id", "event_type", "body", "created_at"} <= set(names)
    await migrate(database_url, TRACEPARENT)
