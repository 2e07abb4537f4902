"""The outbox holds events while the bus is away; the consumer handles each event once."""

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from services.users.models import Base, OutboxEvent, ProcessedEvent, Profile
from shared.db import Database
from shared.events.bus import Subscription
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import EventConsumer
from shared.events.inprocess import InProcessBus
from shared.events.outbox import Outbox, OutboxRelay


@pytest.fixture
async def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/unit.db")
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    return database


class BrokerThatComesAndGoes(InProcessBus):
    """The in-process bus, refusing to publish while `down` (as a broker outage would)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, event: CloudEvent, headers: dict[str, str]) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        await super().publish(event, headers)


async def test_relay_keeps_events_while_the_bus_is_down_and_sends_them_in_order_later(
    database: Database,
) -> None:
    bus = BrokerThatComesAndGoes()
    received: list[int] = []

    async def collect(event: CloudEvent, headers: dict[str, str]) -> None:
        received.append(event.data["n"])

    await bus.consume(Subscription("q", ("#",), collect))
    outbox = Outbox(OutboxEvent, source="lyceum/test")
    relay = OutboxRelay(database, outbox, bus, poll_seconds=0.05)
    relay.start()
    bus.down = True
    for n in range(5):
        async with database.sessions() as session:
            outbox.add(session, "thing.happened", f"things/{n}", {"n": n})
            await session.commit()
    await asyncio.sleep(0.2)
    assert received == []
    async with database.sessions() as session:
        unsent = await session.scalar(
            select(func.count()).where(OutboxEvent.published_at.is_(None))
        )
    assert unsent == 5

    bus.down = False
    for _ in range(100):
        if len(received) == 5:
            break
        await asyncio.sleep(0.05)
    await relay.stop()
    await bus.close()
    assert received == [0, 1, 2, 3, 4]


async def test_rolled_back_changes_publish_nothing(database: Database) -> None:
    outbox = Outbox(OutboxEvent, source="lyceum/test")
    async with database.sessions() as session:
        outbox.add(session, "thing.happened", "things/1", {"n": 1})
        await session.rollback()
    async with database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 0


async def test_a_redelivered_event_changes_nothing_twice(database: Database) -> None:
    calls: list[str] = []

    async def create_profile(session: AsyncSession, event: CloudEvent, _state: State) -> None:
        calls.append(event.id)
        session.add(
            Profile(id=uuid.UUID(event.data["id"]), email="a@example.com", name="A", role="student")
        )

    consumer = EventConsumer(
        database, ProcessedEvent, "test.users", {"user.created": create_profile}, State()
    )
    created = CloudEvent(source="lyceum/auth", type="user.created", data={"id": str(uuid.uuid4())})
    await consumer.handle(created, {})
    await consumer.handle(created, {})
    assert calls == [created.id]
    async with database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Profile)) == 1


async def test_a_failing_handler_leaves_no_trace_so_a_redelivery_can_succeed(
    database: Database,
) -> None:
    attempts: list[int] = []

    async def sometimes_fails(session: AsyncSession, event: CloudEvent, _state: State) -> None:
        attempts.append(1)
        session.add(
            Profile(id=uuid.UUID(event.data["id"]), email="b@example.com", name="B", role="student")
        )
        if len(attempts) == 1:
            raise RuntimeError("crash half-way")

    consumer = EventConsumer(
        database, ProcessedEvent, "test.users", {"user.created": sometimes_fails}, State()
    )
    created = CloudEvent(source="lyceum/auth", type="user.created", data={"id": str(uuid.uuid4())})
    with pytest.raises(RuntimeError):
        await consumer.handle(created, {})
    async with database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Profile)) == 0
        assert await session.get(ProcessedEvent, created.id) is None
    await consumer.handle(created, {})
    async with database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Profile)) == 1
