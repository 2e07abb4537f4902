"""A RabbitMQ consumer stopped while it handles an event, on the machine's RabbitMQ: the
handler finishes and acknowledges its message, and what comes afterwards stays in the queue
for another consumer."""

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from shared.events.bus import Subscription
from shared.events.cloudevents import CloudEvent
from shared.events.rabbitmq import RabbitBus
from shared.testing import eventually
from tests.conftest import RABBITMQ, require_dependencies

URL = f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/"


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    require_dependencies("RabbitMQ")
    connection = await aio_pika.connect(URL)
    async with connection:
        yield await connection.channel()


def thing(n: int) -> CloudEvent:
    return CloudEvent(source="lyceum/test", type="thing.happened", data={"n": n})


async def test_a_stopped_consumer_acks_what_it_handled_and_leaves_the_rest(
    channel: AbstractChannel,
) -> None:
    run = uuid.uuid4().hex[:10]
    exchange, queue_name = f"test-{run}.events", f"test-{run}.things"
    handling = asyncio.Event()
    finish = asyncio.Event()
    handled: list[str] = []

    async def slow(event: CloudEvent, headers: dict[str, str]) -> None:
        handled.append(event.id)
        handling.set()
        await finish.wait()

    bus = RabbitBus(URL, exchange)
    try:
        await bus.start()
        await bus.wait_connected(within_seconds=15)
        await bus.consume(Subscription(queue_name, ("thing.*",), slow))
        await eventually(bus.is_ready, within_seconds=15)
        first, second = thing(1), thing(2)
        await bus.publish(first, {})
        await asyncio.wait_for(handling.wait(), 15)

        stopping = asyncio.create_task(bus.stop_consuming())
        await bus.publish(second, {})
        # Something that must not happen while the handler runs: nothing to wait on.
        done, _ = await asyncio.wait({stopping}, timeout=0.5)
        assert not done, "it waits for the handler"
        finish.set()
        await asyncio.wait_for(stopping, 15)
    finally:
        finish.set()
        await bus.close()

    assert handled == [first.id]
    # The broker takes back what the closed channel held unacknowledged: `second`, if it was
    # delivered before the cancel. `first` was acknowledged and is gone.
    queue = await channel.declare_queue(queue_name, passive=True)
    left = await eventually(lambda: queue.get(fail=False), within_seconds=15)
    await left.ack()
    assert left.message_id == second.id
    assert await queue.get(fail=False) is None
    for name in (queue_name, f"{queue_name}.dlq"):
        await channel.queue_delete(name)
    for name in (exchange, f"{exchange}.dlx"):
        await channel.exchange_delete(name)
