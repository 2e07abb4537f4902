"""Domain events on the real RabbitMQ: what another team's queue receives, and what the
outbox does while the broker is away."""

import json
import uuid
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from shared.testing import Stack, eventually
from tests.e2e.bus_helpers import drain, metric_value, other_team_queue
from tests.e2e.helpers import (
    admin_tokens,
    bearer,
    logged,
    register,
    signed_up,
    unique_email,
)


async def test_another_team_receives_user_created_as_cloudevents(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await other_team_queue(amqp_channel, full_stack, "user.*")
    async with full_stack.client() as client:
        account = await register(client, email=unique_email("team"))
    [message] = await drain(queue, 1, account["email"])
    event = json.loads(message.body)
    assert message.content_type == "application/cloudevents+json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == event["id"]
    assert message.type == "user.created"
    assert message.routing_key == "user.created"
    assert event["specversion"] == "1.0"
    assert event["type"] == "user.created"
    assert event["source"] == "lyceum/auth"
    assert event["subject"] == f"users/{account['id']}"
    assert event["datacontenttype"] == "application/json"
    assert event["time"].endswith("Z")
    assert event["data"] == {
        "id": account["id"],
        "email": account["email"],
        "name": account["name"],
        "role": "student",
        "email_verified": False,
    }
    assert str(message.headers.get("traceparent", "")).startswith("00-")


async def test_broker_outage_delays_events_and_loses_none(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await other_team_queue(amqp_channel, full_stack, "user.created")
    auth = full_stack.service_url(1)
    failed_before = await metric_value(auth, "outbox_failed_events", service="auth")
    broker = full_stack.proxies["amqp"]
    broker.cut()
    try:
        async with full_stack.client() as client:
            emails = [unique_email("outage") for _ in range(20)]
            for email in emails:
                await register(client, email=email)
        # Every event is committed. Proof that the relay has since tried, and found the
        # broker away, with all of them waiting: a publish failure counted after this point.
        tried = await _broker_unavailable_count(auth)

        async def relay_tried_again() -> bool:
            return await _broker_unavailable_count(auth) > tried

        await eventually(relay_tried_again, within_seconds=30)
        assert await metric_value(auth, "outbox_pending_events", service="auth") >= 20
        # An outage fails nothing.
        assert await metric_value(auth, "outbox_failed_events", service="auth") == failed_before
        assert await queue.get(fail=False) is None, "an event got out while the broker was away"
    finally:
        broker.restore()
    messages = await drain(queue, 20, "outage-", within_seconds=60)
    delivered = {json.loads(m.body)["data"]["email"] for m in messages}
    assert delivered == set(emails)

    # Every one of them became a profile, once.
    async with full_stack.client() as client:
        admin = await admin_tokens(client)

        async def all_profiles() -> bool:
            listing = await client.get(
                "/api/v1/users",
                headers=bearer(admin),
                params={"search": "outage-", "per_page": 100},
            )
            return bool(listing.json()["pagination"]["total"] == 20)

        await eventually(all_profiles, within_seconds=30)


async def _broker_unavailable_count(service_url: str) -> float:
    return await metric_value(
        service_url, "outbox_publish_failures_total", service="auth", reason="broker_unavailable"
    )


async def test_a_redelivered_event_changes_nothing_the_second_time(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    """Idempotency by event id: auth applies a user.updated, a later change overwrites it,
    then the broker delivers the first event again (same id, same body). Applying it again
    would put the old name back; it must change nothing. A marker event published after it,
    on the same queue, is the proof that auth has consumed the redelivery."""
    queue = await other_team_queue(amqp_channel, full_stack, "user.updated")
    exchange = await amqp_channel.get_exchange(full_stack.exchange)
    async with full_stack.client() as client:
        admin = await admin_tokens(client)
        subject, subject_tokens = await signed_up(client)
        marker, marker_tokens = await signed_up(client)

        async def auth_name_is(tokens: dict[str, Any], name: str) -> bool:
            me = await client.get("/api/v1/auth/me", headers=bearer(tokens))
            return bool(me.json()["name"] == name)

        async def rename(account: dict[str, Any], name: str) -> None:
            response = await client.patch(
                f"/api/v1/users/{account['id']}", json={"name": name}, headers=bearer(admin)
            )
            assert response.status_code == 200, response.text

        await rename(subject, "First")
        [captured] = await drain(queue, 1, subject["email"])
        first = json.loads(captured.body)
        assert first["data"]["name"] == "First"
        await eventually(lambda: auth_name_is(subject_tokens, "First"))
        await rename(subject, "Second")
        await eventually(lambda: auth_name_is(subject_tokens, "Second"))

        await exchange.publish(
            aio_pika.Message(
                captured.body,
                message_id=first["id"],
                type="user.updated",
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="user.updated",
        )
        marker_name = f"Marker {uuid.uuid4().hex[:8]}"
        marker_event = {
            **first,
            "id": str(uuid.uuid4()),
            "subject": f"users/{marker['id']}",
            "data": {
                "id": marker["id"],
                "email": marker["email"],
                "name": marker_name,
                "role": "student",
                "is_active": True,
                "changed": ["name"],
            },
        }
        await exchange.publish(
            aio_pika.Message(
                json.dumps(marker_event).encode(),
                message_id=marker_event["id"],
                type="user.updated",
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="user.updated",
        )
        await eventually(lambda: auth_name_is(marker_tokens, marker_name))
        # A consumer handles the messages it has prefetched concurrently, so the marker
        # makes the redelivery's consumption near-certain; auth's log makes it certain.
        await eventually(lambda: logged(full_stack, "event_duplicate_ignored", "auth", first["id"]))
        me = (await client.get("/api/v1/auth/me", headers=bearer(subject_tokens))).json()
        assert me["name"] == "Second", "the redelivered event was applied a second time"


async def test_poison_message_goes_to_the_dead_letter_queue(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    exchange = await amqp_channel.get_exchange(full_stack.exchange)
    await exchange.publish(
        aio_pika.Message(b"this is not a cloudevent", message_id="poison-1"),
        routing_key="user.created",
    )
    dead_letters = await amqp_channel.get_queue(f"{full_stack.queue_prefix}.users.dlq")

    async def dead_lettered() -> Any:
        return await dead_letters.get(fail=False)

    message = await eventually(dead_lettered, within_seconds=15)
    assert message.body == b"this is not a cloudevent"
    await message.ack()
