"""The outbox holds events while the bus is away, sets aside a row that can never be
published without holding up the rows behind it, and keeps each subject's events in order;
the consumer handles each event once."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from services.users.models import Base, OutboxEvent, ProcessedEvent, Profile
from shared.db import Database, utcnow
from shared.events.bus import PublishRefused, Subscription
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import EventConsumer
from shared.events.inprocess import InProcessBus
from shared.events.outbox import Outbox, OutboxRelay
from shared.health import router as health_router
from shared.testing import eventually


@pytest.fixture
async def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/unit.db")
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    return database


def fresh_outbox() -> Outbox:
    """An outbox with a service name of its own, so that each test reads its own metrics."""
    return Outbox(OutboxEvent, source=f"lyceum/test-{uuid.uuid4().hex[:8]}")


@contextlib.asynccontextmanager
async def running_relay(
    database: Database, outbox: Outbox, bus: Any, **options: Any
) -> AsyncIterator[OutboxRelay]:
    """A relay publishing `outbox` to `bus` for the block; the bus is closed after it."""
    relay = OutboxRelay(database, outbox, bus, **options)
    relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        await bus.close()


class Collector:
    """A consumer that records what it receives and lets a test wait for it."""

    def __init__(self) -> None:
        self.events: list[CloudEvent] = []
        self._changed = asyncio.Event()

    async def __call__(self, event: CloudEvent, headers: dict[str, str]) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, count: int, within_seconds: float = 10.0) -> list[CloudEvent]:
        async def enough() -> None:
            while len(self.events) < count:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(enough(), within_seconds)
        return self.events


class Bus(InProcessBus):
    """The in-process bus, counting what it is asked to publish; while `down` it is
    unreachable (as in a broker outage), and it refuses the events `refuse` says no to
    (as a broker that nacks one message)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0
        self.refuse: Callable[[CloudEvent], bool] = lambda event: False
        self.error: Exception | None = None
        self.ready = True

    async def publish(self, event: CloudEvent, headers: dict[str, str]) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("broker unreachable")
        if self.error is not None:
            raise self.error
        if self.refuse(event):
            raise PublishRefused(f"refused {event.id}")
        await super().publish(event, headers)

    async def is_ready(self) -> bool:
        return self.ready and not self.down

    async def wait_for_calls(self, count: int) -> None:
        async def made() -> bool:
            return self.calls >= count

        await eventually(made, within_seconds=10, interval=0.01)


async def record(database: Database, outbox: Outbox, *events: tuple[str, dict[str, Any]]) -> None:
    """Commits `(subject, data)` events in one transaction, in that order."""
    async with database.unit_of_work() as session:
        for subject, data in events:
            outbox.add(session, "thing.happened", subject, data)


async def plant_unpublishable_row(database: Database, subject: str) -> str:
    row_id = str(uuid.uuid4())
    async with database.unit_of_work() as session:
        session.add(
            OutboxEvent(id=row_id, type="thing.happened", subject=subject, payload="not json")
        )
    return row_id


async def outbox_row(database: Database, row_id: str) -> OutboxEvent:
    async with database.sessions() as session:
        row = await session.get(OutboxEvent, row_id)
    assert row is not None
    return row


async def scrape(service: str) -> dict[str, float]:
    """The service's outbox figures as GET /metrics shows them."""
    app = FastAPI()
    app.include_router(health_router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.labels.get("service") == service:
                reason = sample.labels.get("reason")
                figures[f"{sample.name}:{reason}" if reason else sample.name] = sample.value
    return figures


async def test_relay_keeps_events_while_the_bus_is_down_and_sends_them_in_order_later(
    database: Database,
) -> None:
    bus = Bus()
    received = Collector()
    await bus.consume(Subscription("q", ("#",), received))
    outbox = fresh_outbox()
    async with running_relay(database, outbox, bus, poll_seconds=0.05, max_attempts=2):
        bus.down = True
        for n in range(5):
            await record(database, outbox, (f"things/{n}", {"n": n}))
        # The relay has knocked more times than a row may fail since the last event was
        # written: an outage is nobody's fault, so no row counted an attempt or failed.
        await bus.wait_for_calls(bus.calls + 3)
        async with database.sessions() as session:
            rows = (await session.scalars(select(OutboxEvent))).all()
        assert len(rows) == 5
        assert all(row.published_at is None and row.failed_at is None for row in rows)
        assert [row.attempts for row in rows] == [0] * 5
        assert received.events == []
        figures = await scrape(outbox.service)
        assert figures["outbox_pending_events"] == 5
        assert figures["outbox_oldest_pending_age_seconds"] > 0
        assert figures["outbox_failed_events"] == 0
        assert figures["outbox_publish_failures_total:broker_unavailable"] >= 3

        bus.down = False
        events = await received.wait_for(5)
    assert [event.data["n"] for event in events] == [0, 1, 2, 3, 4]


async def test_an_unpublishable_row_is_set_aside_and_the_events_behind_it_still_arrive(
    database: Database,
) -> None:
    bus = Bus()
    received = Collector()
    await bus.consume(Subscription("q", ("#",), received))
    outbox = fresh_outbox()
    poison = await plant_unpublishable_row(database, "things/poison")
    for n in range(10):
        await record(database, outbox, (f"things/{n}", {"n": n}))
    async with running_relay(
        database, outbox, bus, poll_seconds=0.05, max_attempts=3, retry_seconds=0.01
    ):
        events = await received.wait_for(10)

        async def set_aside() -> bool:
            return (await outbox_row(database, poison)).failed_at is not None

        await eventually(set_aside, within_seconds=10, interval=0.01)
        figures = await scrape(outbox.service)
    assert sorted(event.data["n"] for event in events) == list(range(10))
    row = await outbox_row(database, poison)
    assert row.published_at is None
    assert row.attempts == 3
    assert row.last_error is not None
    assert row.last_error.startswith("invalid_payload")
    assert figures["outbox_failed_events"] == 1
    assert figures["outbox_pending_events"] == 0
    assert figures["outbox_oldest_pending_age_seconds"] == 0
    assert figures["outbox_published_events_total"] == 10
    assert figures["outbox_publish_failures_total:invalid_payload"] == 3


async def test_the_events_behind_a_row_waiting_for_its_retry_go_on_meanwhile(
    database: Database,
) -> None:
    bus = Bus()
    received = Collector()
    await bus.consume(Subscription("q", ("#",), received))
    outbox = fresh_outbox()
    poison = await plant_unpublishable_row(database, "things/poison")
    async with running_relay(database, outbox, bus, poll_seconds=0.05, retry_seconds=3600):
        for n in range(10):
            await record(database, outbox, (f"things/{n}", {"n": n}))
        await received.wait_for(10)
    row = await outbox_row(database, poison)
    assert (row.attempts, row.failed_at, row.published_at) == (1, None, None)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at > utcnow()


async def test_a_subjects_events_wait_behind_its_refused_event_and_others_go_on(
    database: Database,
) -> None:
    bus = Bus()
    received = Collector()
    await bus.consume(Subscription("q", ("#",), received))
    refusals = {"a1": 2}

    def refuse(event: CloudEvent) -> bool:
        left = refusals.get(event.data["name"], 0)
        refusals[event.data["name"]] = left - 1
        return left > 0

    bus.refuse = refuse
    outbox = fresh_outbox()
    await record(
        database,
        outbox,
        ("things/a", {"name": "a1"}),
        ("things/a", {"name": "a2"}),
        ("things/b", {"name": "b1"}),
        ("things/a", {"name": "a3"}),
        ("things/b", {"name": "b2"}),
    )
    async with running_relay(
        database, outbox, bus, poll_seconds=0.05, max_attempts=5, retry_seconds=0.01
    ):
        events = await received.wait_for(5)
    order = [event.data["name"] for event in events]
    assert order == ["b1", "b2", "a1", "a2", "a3"]


async def test_a_subject_goes_on_once_its_blocking_event_has_failed(database: Database) -> None:
    bus = Bus()
    received = Collector()
    await bus.consume(Subscription("q", ("#",), received))
    bus.refuse = lambda event: event.data["name"] == "a1"
    outbox = fresh_outbox()
    await record(database, outbox, ("things/a", {"name": "a1"}), ("things/a", {"name": "a2"}))
    async with running_relay(
        database, outbox, bus, poll_seconds=0.05, max_attempts=2, retry_seconds=0.01
    ):
        events = await received.wait_for(1)
    assert [event.data["name"] for event in events] == ["a2"]
    async with database.sessions() as session:
        failed = (
            await session.scalars(select(OutboxEvent).where(OutboxEvent.failed_at.is_not(None)))
        ).all()
    assert [row.attempts for row in failed] == [2]
    assert failed[0].last_error is not None
    assert failed[0].last_error.startswith("refused")


@pytest.mark.parametrize(("bus_ready", "counts_as_attempt"), [(True, True), (False, False)])
async def test_an_unexpected_error_counts_against_the_row_only_while_the_bus_is_ready(
    database: Database, bus_ready: bool, counts_as_attempt: bool
) -> None:
    bus = Bus()
    bus.error = RuntimeError("something odd")
    bus.ready = bus_ready
    outbox = fresh_outbox()
    await record(database, outbox, ("things/1", {"n": 1}))
    relay = OutboxRelay(database, outbox, bus, retry_seconds=3600)
    result = await relay.publish_pending()
    async with database.sessions() as session:
        row = await session.scalar(select(OutboxEvent))
    assert row is not None
    assert row.failed_at is None
    assert result.broker_unavailable is not counts_as_attempt
    assert row.attempts == (1 if counts_as_attempt else 0)


async def test_metrics_are_served_outside_the_openapi_document() -> None:
    app = FastAPI()
    app.include_router(health_router)
    assert "/metrics" not in app.openapi()["paths"]


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


class HeldBus(Bus):
    """Holds every publish until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.published: list[str] = []

    async def publish(self, event: CloudEvent, headers: dict[str, str]) -> None:
        self.calls += 1
        await self.release.wait()
        await super().publish(event, headers)
        self.published.append(event.id)


async def test_a_relay_stopped_in_the_middle_of_a_batch_finishes_it_and_marks_it_sent(
    database: Database,
) -> None:
    bus = HeldBus()
    outbox = fresh_outbox()
    relay = OutboxRelay(database, outbox, bus, poll_seconds=60)
    relay.start()
    await record(database, outbox, *[(f"things/{n}", {"n": n}) for n in range(3)])
    await bus.wait_for_calls(1)
    stopping = asyncio.create_task(relay.stop(grace_seconds=10))
    await asyncio.sleep(0)
    bus.release.set()
    await stopping
    await bus.close()

    async with database.sessions() as session:
        rows = (await session.scalars(select(OutboxEvent))).all()
    assert len(rows) == 3
    assert all(row.published_at is not None for row in rows)
    # Each went out once: a batch cut short would be published again by the next relay.
    assert sorted(bus.published) == sorted(row.id for row in rows)


async def test_stopping_consumers_lets_the_handler_running_finish_and_takes_nothing_more() -> None:
    bus = InProcessBus()
    handling = asyncio.Event()
    finish = asyncio.Event()
    handled: list[int] = []

    async def slow(event: CloudEvent, headers: dict[str, str]) -> None:
        handling.set()
        await finish.wait()
        handled.append(event.data["n"])

    await bus.consume(Subscription("q", ("#",), slow))
    await bus.publish(CloudEvent(source="lyceum/test", type="thing.happened", data={"n": 1}), {})
    await asyncio.wait_for(handling.wait(), 5)
    stopping = asyncio.create_task(bus.stop_consuming())
    await bus.publish(CloudEvent(source="lyceum/test", type="thing.happened", data={"n": 2}), {})
    finish.set()
    await asyncio.wait_for(stopping, 5)
    await bus.close()
    assert handled == [1]
