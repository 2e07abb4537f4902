"""Replies left generating by a process that died end as stopped, once they are older than
the longest a generation may run; replies still within it are left alone."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.chat.generation import end_abandoned
from services.chat.models import Base, Conversation, Message
from shared.db import Database, utcnow


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    async with db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield db
    await db.dispose()


def reply(conversation: Conversation, age: timedelta, status: str) -> Message:
    created = utcnow() - age
    return Message(
        id=uuid.uuid4(),
        conversation_id=conversation.id,
        user_id=conversation.user_id,
        role="assistant",
        content="half an answ",
        model="lyceum-dev",
        status=status,
        created_at=created,
        updated_at=created,
    )


async def test_only_replies_older_than_a_generation_can_run_are_ended(database: Database) -> None:
    user_id = uuid.uuid4()
    conversation = Conversation(id=uuid.uuid4(), user_id=user_id, title="t", model="lyceum-dev")
    dead = reply(conversation, timedelta(hours=2), "generating")
    running = reply(conversation, timedelta(seconds=5), "generating")
    finished = reply(conversation, timedelta(hours=3), "completed")
    async with database.unit_of_work() as session:
        session.add(conversation)
        await session.flush()
        session.add_all([dead, running, finished])

    assert await end_abandoned(database, timedelta(minutes=11)) == 1
    async with database.unit_of_work() as session:
        statuses = {}
        for message in (dead, running, finished):
            row = await session.get(Message, message.id)
            assert row is not None
            statuses[row.id] = (row.status, row.finish_reason, row.content)
    assert statuses == {
        dead.id: ("stopped", "stopped", "half an answ"),
        running.id: ("generating", None, "half an answ"),
        finished.id: ("completed", None, "half an answ"),
    }
    assert await end_abandoned(database, timedelta(minutes=11)) == 0
