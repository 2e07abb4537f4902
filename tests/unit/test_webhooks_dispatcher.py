"""The dispatcher on a real (SQLite) database with a stand-in sender: every attempt is
recorded whatever happens, only the holder of a claim records on the delivery,
failing endpoints cannot take the slots healthy endpoints need, and the metrics count
deliveries by outcome, attempts and disabled endpoints."""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

import services.webhooks
from services.webhooks import metrics as webhook_metrics
from services.webhooks import service
from services.webhooks.dispatcher import Dispatcher, Job
from services.webhooks.events import add_message
from services.webhooks.models import (
    DISABLED_BY_ADMIN,
    PENDING,
    SUCCEEDED,
    Attempt,
    Delivery,
    Endpoint,
)
from services.webhooks.sender import AttemptResult
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import new_secret
from services.webhooks.url_safety import Resolver
from shared.db import Database, utcnow
from shared.errors import Conflict
from shared.metrics import REGISTRY
from shared.migrations import upgrade_to_head_async

MIGRATIONS = Path(services.webhooks.__file__).parent / "migrations"


class StandInSender:
    """Records what it is asked to send; answers with `result`, raises `error`, or waits
    for `release` first."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.result = AttemptResult(204, "", 1, None)
        self.error: Exception | None = None
        self.release: asyncio.Event | None = None

    async def send(self, url: str, headers: dict[str, str], body: str) -> AttemptResult:
        self.sent.append(url)
        if self.release is not None:
            await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result

    async def close(self) -> None:
        pass


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'webhooks.db'}"
    await upgrade_to_head_async(MIGRATIONS, url)
    database = Database(url)
    yield database
    await database.dispose()


@pytest.fixture
async def resolver() -> AsyncIterator[Resolver]:
    resolver = Resolver(threads=1)
    yield resolver
    resolver.close()


def dispatcher_with(
    database: Database, resolver: Resolver, **settings: object
) -> tuple[Dispatcher, StandInSender]:
    defaults: dict[str, object] = {
        "webhook_retry_schedule": "10,20",
        "webhook_attempt_timeout_seconds": 5,
    }
    config = WebhooksSettings(**{**defaults, **settings})  # type: ignore[arg-type]
    dispatcher = Dispatcher(database, config, resolver)
    stand_in = StandInSender()
    dispatcher._sender = stand_in  # type: ignore[assignment]
    return dispatcher, stand_in


async def endpoint_with_deliveries(
    database: Database, name: str, count: int, failing: bool = False
) -> Endpoint:
    async with database.unit_of_work() as session:
        endpoint = Endpoint(
            url=f"https://{name}.example/hook",
            event_types=["*"],
            description="",
            secret=new_secret(),
            failing_since=utcnow() - timedelta(minutes=1) if failing else None,
        )
        session.add(endpoint)
        await session.flush()
        for _ in range(count):
            add_message(session, str(uuid.uuid4()), "user.updated", utcnow(), {}, [endpoint])
    return endpoint


async def delivery_of(database: Database, endpoint: Endpoint) -> Delivery:
    async with database.sessions() as session:
        return (
            await session.scalars(select(Delivery).where(Delivery.endpoint_id == endpoint.id))
        ).one()


async def attempts_of(database: Database, delivery: Delivery) -> list[Attempt]:
    async with database.sessions() as session:
        rows = await session.scalars(
            select(Attempt).where(Attempt.delivery_id == delivery.id).order_by(Attempt.id)
        )
        return list(rows)


async def started(dispatcher: Dispatcher, sender: StandInSender) -> None:
    """Lets the attempt tasks just created reach the sender."""
    for _ in range(100):
        if len(sender.sent) == len(dispatcher._tasks):
            return
        await asyncio.sleep(0)
    raise AssertionError("the attempts did not start")


async def run_until_idle(dispatcher: Dispatcher) -> None:
    await dispatcher._dispatch_all_due()
    while dispatcher._tasks:
        await asyncio.gather(*list(dispatcher._tasks))


async def test_an_exception_in_an_attempt_is_recorded_and_retried_on_schedule(
    database: Database, resolver: Resolver
) -> None:
    dispatcher, sender = dispatcher_with(database, resolver)
    sender.error = UnicodeEncodeError("ascii", "bücher", 1, 2, "ordinal not in range(128)")
    endpoint = await endpoint_with_deliveries(database, "crash", 1)
    before = utcnow()
    await run_until_idle(dispatcher)
    delivery = await delivery_of(database, endpoint)
    [attempt] = await attempts_of(database, delivery)
    assert attempt.error is not None
    assert attempt.error.startswith("UnicodeEncodeError: ")
    assert "Traceback" not in attempt.error
    assert attempt.response_status is None
    assert delivery.status == PENDING
    assert delivery.attempt_count == 1
    assert delivery.claim_token is None
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at >= before + timedelta(seconds=10)  # the first delay


async def test_only_the_holder_of_the_claim_records_on_the_delivery(
    database: Database, resolver: Resolver
) -> None:
    dispatcher, _ = dispatcher_with(database, resolver)
    endpoint = await endpoint_with_deliveries(database, "claimed", 1)
    [job] = await dispatcher._claim(10)
    assert isinstance(job, Job)
    # The claim lapsed and someone else claimed the delivery meanwhile.
    async with database.unit_of_work() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.id == job.delivery_id)
            .values(claim_token=uuid.uuid4())
            .execution_options(synchronize_session=False)
        )
    await dispatcher._record(job, utcnow(), AttemptResult(204, "", 3, None))
    delivery = await delivery_of(database, endpoint)
    assert (delivery.status, delivery.attempt_count) == (PENDING, 0)
    [attempt] = await attempts_of(database, delivery)  # the request was sent: it is logged
    assert attempt.response_status == 204
    # The holder of the claim records normally.
    async with database.unit_of_work() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.id == job.delivery_id)
            .values(claim_token=job.claim_token)
            .execution_options(synchronize_session=False)
        )
    await dispatcher._record(job, utcnow(), AttemptResult(204, "", 3, None))
    delivery = await delivery_of(database, endpoint)
    assert (delivery.status, delivery.attempt_count) == (SUCCEEDED, 1)
    assert delivery.claim_token is None


async def test_a_claimed_delivery_is_not_claimed_again(
    database: Database, resolver: Resolver
) -> None:
    dispatcher, _ = dispatcher_with(database, resolver)
    await endpoint_with_deliveries(database, "once", 1)
    first = await dispatcher._claim(10)
    other, _ = dispatcher_with(database, resolver)
    assert len(first) == 1
    assert await other._claim(10) == []


async def test_dispatchers_claiming_at_once_never_claim_the_same_delivery(
    database: Database, resolver: Resolver
) -> None:
    for n in range(3):
        await endpoint_with_deliveries(database, f"shared{n}", 2)
    dispatchers = [dispatcher_with(database, resolver)[0] for _ in range(4)]
    claims = await asyncio.gather(*(dispatcher._claim(10) for dispatcher in dispatchers))
    claimed = [job.delivery_id for jobs in claims for job in jobs]
    assert len(claimed) == len(set(claimed)) == 6


async def test_failing_endpoints_cannot_take_the_slots_of_healthy_ones(
    database: Database, resolver: Resolver
) -> None:
    # 4 slots, 2 per endpoint, 1 per failing endpoint, 2 for failing endpoints together.
    dispatcher, sender = dispatcher_with(
        database,
        resolver,
        webhook_concurrency=4,
        webhook_endpoint_concurrency=2,
        webhook_failing_endpoint_concurrency=1,
    )
    sender.release = asyncio.Event()
    for n in range(4):
        await endpoint_with_deliveries(database, f"hanging{n}", 5, failing=True)
    await dispatcher._dispatch_all_due()
    await started(dispatcher, sender)
    assert len(sender.sent) == 2  # only the failing endpoints' share: two slots stay free
    healthy = await endpoint_with_deliveries(database, "healthy", 3)
    await dispatcher._dispatch_all_due()
    await started(dispatcher, sender)
    hosts = Counter(url.split("/")[2] for url in sender.sent)
    assert hosts["healthy.example"] == 2  # its own cap; the failing ones got no more
    assert sum(hosts.values()) == 4
    assert max(n for host, n in hosts.items() if host.startswith("hanging")) == 1
    sender.release.set()
    while dispatcher._tasks:
        await asyncio.gather(*list(dispatcher._tasks))
    async with database.sessions() as session:
        done = await session.scalars(
            select(Delivery).where(Delivery.endpoint_id == healthy.id, Delivery.status == SUCCEEDED)
        )
        assert len(list(done)) == 2


async def test_a_manual_retry_is_refused_while_an_attempt_is_in_flight(
    database: Database, resolver: Resolver
) -> None:
    dispatcher, _ = dispatcher_with(database, resolver)
    endpoint = await endpoint_with_deliveries(database, "busy", 1)
    [job] = await dispatcher._claim(10)
    with pytest.raises(Conflict):
        async with database.unit_of_work() as session:
            await service.retry_delivery(session, job.delivery_id)
    delivery = await delivery_of(database, endpoint)
    assert delivery.claim_token == job.claim_token  # the attempt in flight still holds it
    # Once the claim has lapsed (its sender must be gone), a retry takes over.
    async with database.unit_of_work() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.id == job.delivery_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
            .execution_options(synchronize_session=False)
        )
    async with database.unit_of_work() as session:
        retried = await service.retry_delivery(session, job.delivery_id)
    assert retried.status == PENDING
    delivery = await delivery_of(database, endpoint)
    assert delivery.claim_token is None
    # The lapsed attempt's outcome, should it still come, no longer changes the delivery.
    await dispatcher._record(job, utcnow(), AttemptResult(204, "", 3, None))
    assert (await delivery_of(database, endpoint)).status == PENDING


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_deliveries_attempts_and_disabled_endpoints_are_counted(
    database: Database, resolver: Resolver
) -> None:
    dispatcher, sender = dispatcher_with(
        database, resolver, webhook_retry_schedule="10", webhook_disable_after_seconds=30
    )
    outcomes = ("succeeded", "retrying", "failed")
    deliveries = {o: sample("webhook_deliveries_total", outcome=o) for o in outcomes}
    attempts = {
        o: sample("webhook_attempt_duration_seconds_count", outcome=o)
        for o in ("succeeded", "failed")
    }
    disabled = sample("webhook_endpoints_disabled_total")

    await endpoint_with_deliveries(database, "healthy", 3)
    await run_until_idle(dispatcher)
    sender.result = AttemptResult(500, "", 2, None)
    flaky = await endpoint_with_deliveries(database, "flaky", 1)
    await run_until_idle(dispatcher)  # its first failure: retried later
    async with database.unit_of_work() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.endpoint_id == flaky.id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
            .execution_options(synchronize_session=False)
        )
    await run_until_idle(dispatcher)  # its second: no attempt left
    await endpoint_with_deliveries(database, "dead", 1, failing=True)
    await run_until_idle(dispatcher)  # failing for a minute: disabled

    assert {o: sample("webhook_deliveries_total", outcome=o) - deliveries[o] for o in outcomes} == {
        "succeeded": 3,
        "retrying": 2,
        "failed": 1,
    }
    assert sample("webhook_attempt_duration_seconds_count", outcome="succeeded") == (
        attempts["succeeded"] + 3
    )
    assert sample("webhook_attempt_duration_seconds_count", outcome="failed") == (
        attempts["failed"] + 3
    )
    assert sample("webhook_endpoints_disabled_total") == disabled + 1

    async with database.unit_of_work() as session:
        await session.execute(
            update(Endpoint)
            .where(Endpoint.id == flaky.id)
            .values(enabled=False, disabled_reason=DISABLED_BY_ADMIN)
            .execution_options(synchronize_session=False)
        )
    await webhook_metrics.count_disabled_endpoints(database)
    assert sample("webhook_disabled_endpoints", reason="failing") == 1
    assert sample("webhook_disabled_endpoints", reason="admin") == 1
