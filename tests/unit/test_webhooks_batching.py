"""Batched fan-out, claims and records, on SQLite and on PostgreSQL: an event becomes a
due delivery to each matching enabled endpoint, one claim takes a few due
deliveries of every endpoint, two dispatchers side by side send every delivery exactly
once, the per-endpoint and overall bounds hold across them, successes are recorded many
to a transaction, and a success whose claim was lost is logged once without touching
the delivery."""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from services.webhooks.dispatcher import Dispatcher, Outcome
from services.webhooks.events import add_message, fan_out, webhook_body
from services.webhooks.models import PENDING, SUCCEEDED, Attempt, Delivery, Endpoint, Message
from services.webhooks.sender import AttemptResult
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import new_secret
from services.webhooks.url_safety import Resolver
from shared.db import Database, utcnow
from shared.events.cloudevents import CloudEvent
from shared.migrations import upgrade_to_head_async
from shared.registry import WEBHOOKS
from shared.testing import eventually
from tests.databases import scratch_database_url


class Recipients:
    """A stand-in sender shared by every dispatcher of a test: records what each sent,
    how many requests each endpoint had in flight at most, and answers 204 after
    `delay` seconds (or once `release` is set)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.release: asyncio.Event | None = None
        self.sent: Counter[tuple[str, str]] = Counter()
        self.by_sender: dict[str, set[tuple[str, str]]] = {}
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.peak: Counter[tuple[str, str]] = Counter()
        self.total: Counter[str] = Counter()
        self.peak_total: Counter[str] = Counter()

    def sender(self, name: str) -> "StandIn":
        self.by_sender[name] = set()
        return StandIn(self, name)


class StandIn:
    def __init__(self, recipients: Recipients, name: str) -> None:
        self.recipients = recipients
        self.name = name

    async def send(self, url: str, headers: dict[str, str], body: str) -> AttemptResult:
        r = self.recipients
        key = (url, headers["webhook-id"])
        r.sent[key] += 1
        r.by_sender[self.name].add(key)
        per_endpoint = (self.name, url)
        r.in_flight[per_endpoint] += 1
        r.total[self.name] += 1
        r.peak[per_endpoint] = max(r.peak[per_endpoint], r.in_flight[per_endpoint])
        r.peak_total[self.name] = max(r.peak_total[self.name], r.total[self.name])
        try:
            if r.release is not None:
                await r.release.wait()
            await asyncio.sleep(r.delay)
        finally:
            r.in_flight[per_endpoint] -= 1
            r.total[self.name] -= 1
        return AttemptResult(204, "", 1, None)

    async def close(self) -> None:
        pass


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database_url(request.param, tmp_path, "webhooks_batching") as url:
        await upgrade_to_head_async(WEBHOOKS.migrations_dir, url)
        yield url


@pytest.fixture
async def resolver() -> AsyncIterator[Resolver]:
    resolver = Resolver(threads=1)
    yield resolver
    resolver.close()


@pytest.fixture
async def databases(database_url: str) -> AsyncIterator[list[Database]]:
    """Three pools on the one database: the test's own, and one per dispatcher."""
    pools = [Database(database_url) for _ in range(3)]
    yield pools
    for pool in pools:
        await pool.dispose()


def replica(
    database: Database,
    resolver: Resolver,
    recipients: Recipients,
    name: str,
    **settings: object,
) -> Dispatcher:
    config = WebhooksSettings(
        webhook_retry_schedule="10,20",
        webhook_attempt_timeout_seconds=5,
        webhook_poll_seconds=0.05,
        **settings,  # type: ignore[arg-type]
    )
    dispatcher = Dispatcher(database, config, resolver)
    dispatcher._sender = recipients.sender(name)  # type: ignore[assignment]
    return dispatcher


async def endpoints_with_messages(
    database: Database, endpoints: int, messages: int
) -> tuple[list[Endpoint], set[tuple[str, str]]]:
    """`endpoints` endpoints, each sent every one of `messages` messages; returns them
    and the (url, message id) pairs expected at the receiving end."""
    async with database.unit_of_work() as session:
        created = [
            Endpoint(
                url=f"https://e{n}.example/hook",
                event_types=["*"],
                description="",
                secret=new_secret(),
            )
            for n in range(endpoints)
        ]
        session.add_all(created)
        await session.flush()
        ids = [str(uuid.uuid4()) for _ in range(messages)]
        for message_id in ids:
            add_message(session, message_id, "user.updated", utcnow(), {}, created)
    return created, {(e.url, m) for e in created for m in ids}


async def statuses(database: Database) -> Counter[str]:
    async with database.sessions() as session:
        rows = await session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        )
        return Counter(dict(rows.all()))


async def test_an_event_becomes_a_due_delivery_to_each_matching_enabled_endpoint(
    databases: list[Database],
) -> None:
    database = databases[0]
    async with database.unit_of_work() as session:
        endpoints = {
            name: Endpoint(
                url=f"https://{name}.example/hook",
                event_types=filters,
                description="",
                secret=new_secret(),
                enabled=enabled,
            )
            for name, filters, enabled in [
                ("all", ["*"], True),
                ("users", ["user.*"], True),
                ("courses", ["course.*"], True),
                ("disabled", ["*"], False),
            ]
        }
        session.add_all(endpoints.values())
    event = CloudEvent(source="lyceum/users", type="user.updated", data={"name": "Ada"})
    before = utcnow()
    async with database.unit_of_work() as session:
        await fan_out(session, event, None)  # type: ignore[arg-type]

    async with database.sessions() as session:
        rows = (await session.execute(select(Delivery))).scalars().all()
        message = await session.get(Message, event.id)
    assert {row.endpoint_id for row in rows} == {endpoints["all"].id, endpoints["users"].id}
    assert len({row.id for row in rows}) == 2
    for row in rows:
        assert (row.message_id, row.status, row.attempt_count) == (event.id, PENDING, 0)
        assert row.claim_token is None
        assert row.next_attempt_at is not None
        assert before <= row.next_attempt_at <= utcnow()
    assert message is not None
    assert message.body == webhook_body(event.type, event.time, event.data)


async def test_one_claim_takes_a_few_due_deliveries_of_every_endpoint(
    databases: list[Database], resolver: Resolver
) -> None:
    mine, _, _ = databases
    dispatcher = replica(mine, resolver, Recipients(), "a", webhook_endpoint_concurrency=3)
    endpoints, _ = await endpoints_with_messages(mine, 4, 6)
    # Two attempts of the first endpoint are in flight here already: it has room for one.
    busy = endpoints[0].id
    dispatcher._in_flight[busy] = 2
    jobs = await dispatcher._claim(100)
    per_endpoint = Counter(job.endpoint_id for job in jobs)
    assert per_endpoint[busy] == 1
    assert [per_endpoint[e.id] for e in endpoints[1:]] == [3, 3, 3]
    assert len({job.claim_token for job in jobs}) == 1  # one statement's claim
    assert all(job.body.startswith('{"type":"user.updated"') for job in jobs)
    # The budget caps the claim; what it leaves stays due for the next one.
    dispatcher._in_flight.clear()
    assert len(await dispatcher._claim(5)) == 5
    assert (await statuses(mine))[PENDING] == 24


async def test_two_dispatchers_send_every_delivery_exactly_once(
    databases: list[Database], resolver: Resolver
) -> None:
    mine, first, second = databases
    recipients = Recipients(delay=0.002)
    replicas = [
        replica(first, resolver, recipients, "a", webhook_concurrency=16),
        replica(second, resolver, recipients, "b", webhook_concurrency=16),
    ]
    _, expected = await endpoints_with_messages(mine, 12, 25)
    for dispatcher in replicas:
        dispatcher.start()
    try:

        async def all_succeeded() -> bool:
            return (await statuses(mine)) == Counter({SUCCEEDED: len(expected)})

        await eventually(all_succeeded, within_seconds=60, interval=0.1)
    finally:
        for dispatcher in replicas:
            await dispatcher.stop()
    assert set(recipients.sent) == expected
    assert set(recipients.sent.values()) == {1}, "a delivery was sent twice"
    assert recipients.by_sender["a"], "the first replica sent nothing"
    assert recipients.by_sender["b"], "the second replica sent nothing"
    async with mine.sessions() as session:
        attempts = await session.execute(select(Attempt.delivery_id, Attempt.response_status))
        logged = Counter(delivery_id for delivery_id, status in attempts if status == 204)
        counts = set((await session.scalars(select(Delivery.attempt_count))).all())
    assert len(logged) == len(expected)
    assert set(logged.values()) == {1}  # one attempt in the log per delivery
    assert counts == {1}


async def test_the_per_endpoint_and_overall_bounds_hold_in_each_dispatcher(
    databases: list[Database], resolver: Resolver
) -> None:
    mine, first, second = databases
    recipients = Recipients(delay=0.01)
    # Two endpoints could take six attempts; the process has five slots.
    bounds = {"webhook_concurrency": 5, "webhook_endpoint_concurrency": 3}
    replicas = [
        replica(first, resolver, recipients, "a", **bounds),
        replica(second, resolver, recipients, "b", **bounds),
    ]
    _, expected = await endpoints_with_messages(mine, 2, 30)
    for dispatcher in replicas:
        dispatcher.start()
    try:

        async def all_succeeded() -> bool:
            return (await statuses(mine)) == Counter({SUCCEEDED: len(expected)})

        await eventually(all_succeeded, within_seconds=60, interval=0.1)
    finally:
        for dispatcher in replicas:
            await dispatcher.stop()
    # Reached, never passed.
    assert max(recipients.peak.values()) == 3
    assert max(recipients.peak_total.values()) == 5
    assert set(recipients.sent.values()) == {1}


async def test_successes_are_recorded_many_to_a_transaction(
    databases: list[Database], resolver: Resolver
) -> None:
    mine, first, _ = databases
    recipients = Recipients()
    recipients.release = asyncio.Event()
    dispatcher = replica(first, resolver, recipients, "a", webhook_concurrency=60)
    await endpoints_with_messages(mine, 12, 5)
    batches: list[int] = []
    record = dispatcher._record_successes

    async def counting(outcomes: list[Outcome]) -> set[Outcome]:
        batches.append(len(outcomes))
        return await record(outcomes)

    dispatcher._record_successes = counting  # type: ignore[method-assign]
    await dispatcher._dispatch_all_due()
    assert len(dispatcher._tasks) == 60
    recipients.release.set()
    while dispatcher._tasks:
        await asyncio.gather(*list(dispatcher._tasks))
    assert sum(batches) == 60
    assert len(batches) <= 3, batches
    assert (await statuses(mine)) == Counter({SUCCEEDED: 60})


async def test_a_success_whose_claim_was_lost_is_logged_once_and_changes_nothing(
    databases: list[Database], resolver: Resolver
) -> None:
    mine, first, _ = databases
    dispatcher = replica(first, resolver, Recipients(), "a")
    await endpoints_with_messages(mine, 1, 2)
    lost, kept = await dispatcher._claim(10)
    async with mine.unit_of_work() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.id == lost.delivery_id)
            .values(claim_token=uuid.uuid4())
            .execution_options(synchronize_session=False)
        )
    await asyncio.gather(dispatcher._attempt(lost), dispatcher._attempt(kept))
    async with mine.sessions() as session:
        deliveries = {d.id: d for d in await session.scalars(select(Delivery))}
        logged = Counter((await session.scalars(select(Attempt.delivery_id))).all())
    assert (deliveries[lost.delivery_id].status, deliveries[lost.delivery_id].attempt_count) == (
        PENDING,
        0,
    )
    assert (deliveries[kept.delivery_id].status, deliveries[kept.delivery_id].attempt_count) == (
        SUCCEEDED,
        1,
    )
    assert logged == Counter({lost.delivery_id: 1, kept.delivery_id: 1})
