"""Domain events on the real RabbitMQ: what another team's queue receives, and what the
outbox does while the broker is away."""

import asyncio
import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from shared.testing import Stack, eventually
from tests.e2e.bus_helpers import drain, other_team_queue
from tests.e2e.helpers import admin_tokens, bearer, register, unique_email


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
    }
    assert str(message.headers.get("traceparent", "")).startswith("00-")


async def test_broker_outage_delays_events_and_loses_none(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await other_team_queue(amqp_channel, full_stack, "user.created")
    broker = full_stack.proxies["amqp"]
    broker.cut()
    try:
        async with full_stack.client() as client:
            emails = [unique_email("outage") for _ in range(20)]
            for email in emails:
                await register(client, email=email)
            await asyncio.sleep(1.0)
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

        # Redeliver one event as the broker might: same id, so no second profile and no change.
        original = json.loads(messages[0].body)
        redelivered: dict[str, Any] = {**original, "data": {**original["data"], "name": "Changed"}}
        exchange = await amqp_channel.get_exchange(full_stack.exchange)
        await exchange.publish(
            aio_pika.Message(
                json.dumps(redelivered).encode(),
                message_id=original["id"],
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="user.created",
        )
        await asyncio.sleep(1.5)
        listing = await client.get(
            "/api/v1/users",
            headers=bearer(admin),
            params={"search": original["data"]["email"]},
        )
        assert listing.json()["pagination"]["total"] == 1
        assert listing.json()["data"][0]["name"] == original["data"]["name"]


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
