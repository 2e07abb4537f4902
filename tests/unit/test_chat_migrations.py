"""Chat's migration to citations (0002), on SQLite and PostgreSQL: the rows already there
keep working (no documents, no citations), the new columns take what the service writes,
the schema is the models' at head, and the migration goes back down."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Boolean, Connection, Integer, String, Uuid, column, table
from sqlalchemy.ext.asyncio import create_async_engine

from services.chat.models import Base, Conversation, Message
from shared.db import Database, UTCDateTime, utcnow
from shared.registry import CHAT
from tests.databases import migrate as migrate_service
from tests.databases import schema_differences, scratch_database_url

BEFORE = "0001"
CITATIONS = "0002"
# The tables as revision 0001 left them (the columns the rows below fill).
OLD_CONVERSATIONS = table(
    "conversations",
    column("id", Uuid()),
    column("user_id", Uuid()),
    column("title", String()),
    column("title_is_automatic", Boolean()),
    column("model", String()),
    column("last_activity_at", UTCDateTime()),
    column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()),
)
OLD_MESSAGES = table(
    "messages",
    column("id", Uuid()),
    column("conversation_id", Uuid()),
    column("user_id", Uuid()),
    column("parent_id", Uuid()),
    column("role", String()),
    column("content", String()),
    column("model", String()),
    column("status", String()),
    column("prompt_tokens", Integer()),
    column("completion_tokens", Integer()),
    column("total_tokens", Integer()),
    column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()),
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database_url(request.param, tmp_path, "chat") as url:
        yield url


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    await migrate_service(CHAT, url, revision, down=down)


def differences(connection: Connection) -> list[object]:
    return schema_differences(connection, Base.metadata)


async def test_citations_migrate_up_with_rows_in_place_and_back_down(database_url: str) -> None:
    await migrate(database_url, BEFORE)
    conversation_id, question_id, reply_id, user_id = (uuid.uuid4() for _ in range(4))
    now = utcnow()
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                OLD_CONVERSATIONS.insert().values(
                    id=conversation_id,
                    user_id=user_id,
                    title="Old",
                    title_is_automatic=False,
                    model="lyceum-dev",
                    last_activity_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
            await connection.execute(
                OLD_MESSAGES.insert(),
                [
                    {
                        "id": message_id,
                        "conversation_id": conversation_id,
                        "user_id": user_id,
                        "parent_id": parent_id,
                        "role": role,
                        "content": "text",
                        "model": "lyceum-dev",
                        "status": "completed",
                        "prompt_tokens": 0,
                        "completion_tokens": 0,
                        "total_tokens": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for message_id, parent_id, role in (
                        (question_id, None, "user"),
                        (reply_id, question_id, "assistant"),
                    )
                ],
            )
    finally:
        await engine.dispose()

    await migrate(database_url, "head")
    database = Database(database_url)
    try:
        async with database.engine.connect() as connection:
            assert await connection.run_sync(differences) == []
        citations = [{"document_id": str(uuid.uuid4()), "title": "T", "page": 2, "snippet": "s"}]
        async with database.unit_of_work() as session:
            conversation = await session.get(Conversation, conversation_id)
            question = await session.get(Message, question_id)
            reply = await session.get(Message, reply_id)
            assert conversation is not None
            assert question is not None
            assert reply is not None
            assert (conversation.use_documents, conversation.document_ids) == (False, None)
            assert (question.use_documents, question.document_ids) == (False, None)
            assert reply.citations is None
            conversation.use_documents = True
            conversation.document_ids = [str(uuid.uuid4())]
            reply.citations = citations
        async with database.unit_of_work() as session:
            reply = await session.get(Message, reply_id)
            conversation = await session.get(Conversation, conversation_id)
            assert reply is not None
            assert conversation is not None
            assert reply.citations == citations
            assert conversation.use_documents is True
    finally:
        await database.dispose()

    await migrate(database_url, BEFORE, down=True)
    await migrate(database_url, CITATIONS)
