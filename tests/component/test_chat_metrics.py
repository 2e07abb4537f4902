"""Chat's metrics while a reply is generated for real (the reply generator, its streams and
slots, on a SQLite database), from a stand-in provider that the test holds mid-answer: the
reply is in flight until it ends, then its tokens count under its model."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.chat.generation import ReplyGenerator, ReplyPlan
from services.chat.models import Base, Conversation, Message
from services.chat.providers.base import CompletionRequest, ModelInfo, Piece, Usage
from services.chat.providers.catalogue import ModelCatalogue
from services.chat.settings import ChatSettings
from services.chat.slots import GenerationSlots
from services.chat.streams import ReplyStreams
from shared.db import Database, utcnow
from shared.metrics import REGISTRY


class HeldProvider:
    """Answers "Hello", then " world" with its usage report once released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def models(self) -> list[ModelInfo]:
        return []

    async def stream(self, request: CompletionRequest) -> AsyncIterator[Piece]:
        yield Piece(text="Hello")
        await self.release.wait()
        yield Piece(text=" world", finish_reason="stop", usage=Usage(7, 2))

    async def close(self) -> None:
        pass


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")
    async with db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield db
    await db.dispose()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_reply_is_in_flight_until_it_ends_then_its_tokens_count(
    database: Database,
) -> None:
    settings = ChatSettings()
    catalogue = ModelCatalogue(settings)
    provider = HeldProvider()
    catalogue.provider = provider
    streams = ReplyStreams(None, "test", 60)
    slots = GenerationSlots(None, "test", 3, 60)
    generator = ReplyGenerator(database, catalogue, streams, slots, settings)
    model = f"model-{uuid.uuid4().hex[:8]}"
    user_id, conversation_id, reply_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    request = CompletionRequest(model=model, messages=[{"role": "user", "content": "Hi"}])
    plan = ReplyPlan(reply_id, conversation_id, user_id, request, utcnow())

    async def write_start() -> None:
        async with database.unit_of_work() as session:
            session.add(Conversation(id=conversation_id, user_id=user_id, title="t", model=model))
            await session.flush()
            session.add(
                Message(
                    id=reply_id,
                    conversation_id=conversation_id,
                    user_id=user_id,
                    role="assistant",
                    model=model,
                    status="generating",
                )
            )

    in_flight = sample("chat_streams_in_flight")
    running = generator.launch(plan, await slots.acquire(user_id), write_start)
    first = await asyncio.wait_for(running.first_event, 10)
    assert first.data["delta"] == "Hello"
    assert sample("chat_streams_in_flight") == in_flight + 1
    assert sample("chat_tokens_total", model=model, kind="completion") == 0

    provider.release.set()
    saved = await asyncio.wait_for(running.finished, 10)
    assert saved.content == "Hello world"
    assert sample("chat_streams_in_flight") == in_flight
    assert sample("chat_tokens_total", model=model, kind="prompt") == 7
    assert sample("chat_tokens_total", model=model, kind="completion") == 2
    assert sample("chat_replies_total", model=model, outcome="completed") == 1
    await generator.close()
    await streams.close()
    await slots.close()
