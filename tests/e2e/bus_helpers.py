"""Another team's view of the event bus: a queue of its own bound to the exchange; and an
operator's: a service's metrics."""

import asyncio
import json
import uuid
from typing import Any

import httpx
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from prometheus_client.parser import text_string_to_metric_families

from shared.testing import Stack


async def other_team_queue(channel: AbstractChannel, stack: Stack, binding: str) -> AbstractQueue:
    queue = await channel.declare_queue(
        f"other-team-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
    )
    await queue.bind(stack.exchange, binding)
    return queue


async def drain(
    queue: AbstractQueue, want: int, email_prefix: str, within_seconds: float = 30.0
) -> list[AbstractIncomingMessage]:
    """Collects `want` events about users whose email starts with `email_prefix` (other
    tests of the session may publish meanwhile)."""
    received: list[AbstractIncomingMessage] = []

    async def collect() -> None:
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                if json.loads(message.body)["data"]["email"].startswith(email_prefix):
                    received.append(message)
                if len(received) >= want:
                    return

    await asyncio.wait_for(collect(), within_seconds)
    return received


async def events_naming(
    queue: AbstractQueue,
    wanted_id: str,
    until_type: str,
    id_fields: tuple[str, ...],
    within_seconds: float = 30.0,
) -> list[dict[str, Any]]:
    """The events whose data names `wanted_id` in one of `id_fields`, up to and including
    the first `until_type` (other tests of the session publish meanwhile)."""
    received: list[dict[str, Any]] = []

    async def collect() -> None:
        async with queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                event = json.loads(message.body)
                if wanted_id in (event["data"].get(name) for name in id_fields):
                    received.append(event)
                    if event["type"] == until_type:
                        return

    await asyncio.wait_for(collect(), within_seconds)
    return received


async def metric_value(service_url: str, name: str, **labels: str) -> float:
    """One sample of a service's `GET /metrics` (0 while the series does not exist)."""
    async with httpx.AsyncClient(base_url=service_url, timeout=5.0) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
