"""Another team's view of the event bus: a queue of its own bound to the exchange."""

import asyncio
import json
import uuid

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

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
