"""An outbox row that can never be published holds up nothing, on the real stack: a row
planted in auth's outbox on PostgreSQL, the relay of the running service, RabbitMQ, and a
queue of another team's bound to the exchange."""

import json
import uuid

from aio_pika.abc import AbstractChannel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.testing import Stack, eventually
from tests.e2e.bus_helpers import drain, metric_value, other_team_queue
from tests.e2e.helpers import auth_database_url, logged, register, unique_email

AUTH_OFFSET = 1  # auth's port, from the gateway's


async def test_an_unpublishable_row_does_not_stop_the_next_events_of_its_service(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await other_team_queue(amqp_channel, full_stack, "user.created")
    auth = full_stack.service_url(AUTH_OFFSET)
    failed_before = await metric_value(auth, "outbox_failed_events", service="auth")

    poison = str(uuid.uuid4())
    engine = create_async_engine(auth_database_url(full_stack))
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO outbox (id, type, subject, payload, created_at, attempts) "
                    "VALUES (:id, 'user.created', :subject, 'not json', now(), 0)"
                ),
                {"id": poison, "subject": f"users/{uuid.uuid4()}"},
            )

        async with full_stack.client() as client:
            emails = {unique_email("behind-poison") for _ in range(10)}
            for email in emails:
                await register(client, email=email)
        messages = await drain(queue, 10, "behind-poison-", within_seconds=60)
        assert {json.loads(m.body)["data"]["email"] for m in messages} == emails

        # Retried with back-off, then set aside: the metric shows it, a log line names it.
        async def set_aside() -> bool:
            failed = await metric_value(auth, "outbox_failed_events", service="auth")
            return failed == failed_before + 1

        await eventually(set_aside, within_seconds=90, interval=0.5)
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT published_at, failed_at, attempts, last_error "
                        "FROM outbox WHERE id = :id"
                    ),
                    {"id": poison},
                )
            ).one()
    finally:
        await engine.dispose()
    assert row.published_at is None
    assert row.failed_at is not None
    assert row.attempts >= 1
    assert row.last_error.startswith("invalid_payload")
    assert await logged(full_stack, "outbox_event_failed", "auth", poison)
    failures = await metric_value(
        auth, "outbox_publish_failures_total", service="auth", reason="invalid_payload"
    )
    assert failures >= 1
