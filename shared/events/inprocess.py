"""The embedded-mode bus: AMQP topic semantics inside one process.

Queues exist from the moment they are declared (messages wait there until a consumer
attaches), a failing handler gets the message again up to the delivery limit, and
then the message goes to the queue's dead letters.
"""

import asyncio
import contextlib
from dataclasses import dataclass

from shared.events.bus import Subscription, topic_matches
from shared.events.cloudevents import CloudEvent
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass
class _Delivery:
    event: CloudEvent
    headers: dict[str, str]
    attempts: int = 0


class _Queue:
    def __init__(self, subscription: Subscription) -> None:
        self.binding_keys = set(subscription.binding_keys)
        self.messages: asyncio.Queue[_Delivery] = asyncio.Queue()
        self.dead_letters: list[_Delivery] = []
        self.consumers: list[asyncio.Task[None]] = []


class InProcessBus:
    def __init__(self, delivery_limit: int = 5) -> None:
        self._queues: dict[str, _Queue] = {}
        self._delivery_limit = delivery_limit
        self._taking_deliveries = True
        self._handling: set[asyncio.Task[None] | None] = set()

    async def start(self) -> None:
        return None

    async def declare(self, subscription: Subscription) -> None:
        queue = self._queues.get(subscription.queue)
        if queue is None:
            self._queues[subscription.queue] = _Queue(subscription)
        else:
            queue.binding_keys.update(subscription.binding_keys)

    async def consume(self, subscription: Subscription) -> None:
        assert subscription.handler is not None
        await self.declare(subscription)
        queue = self._queues[subscription.queue]
        queue.consumers.append(asyncio.create_task(self._consume(subscription, queue)))

    async def publish(self, event: CloudEvent, headers: dict[str, str]) -> None:
        for queue in self._queues.values():
            if any(topic_matches(key, event.type) for key in queue.binding_keys):
                # A copy of its own per queue, as a broker delivers: a handler that changes
                # `data` must not change what another queue's consumer receives.
                copy = event.model_copy(deep=True)
                queue.messages.put_nowait(_Delivery(copy, dict(headers)))

    async def is_ready(self) -> bool:
        return True

    def dead_letters(self, queue_name: str) -> list[CloudEvent]:
        return [d.event for d in self._queues[queue_name].dead_letters]

    async def stop_consuming(self) -> None:
        """The consumers stop between two messages: a handler running finishes first."""
        self._taking_deliveries = False
        consumers = [task for queue in self._queues.values() for task in queue.consumers]
        for task in consumers:
            if task not in self._handling:
                task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)

    async def close(self) -> None:
        for queue in self._queues.values():
            for task in queue.consumers:
                task.cancel()
            for task in queue.consumers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            queue.consumers.clear()

    async def _consume(self, subscription: Subscription, queue: _Queue) -> None:
        assert subscription.handler is not None
        while self._taking_deliveries:
            delivery = await queue.messages.get()
            delivery.attempts += 1
            task = asyncio.current_task()
            self._handling.add(task)
            try:
                await subscription.handler(delivery.event, delivery.headers)
            except Exception:
                log.exception(
                    "event_handler_failed",
                    queue=subscription.queue,
                    event_id=delivery.event.id,
                    attempt=delivery.attempts,
                )
                if delivery.attempts >= self._delivery_limit:
                    queue.dead_letters.append(delivery)
                else:
                    queue.messages.put_nowait(delivery)
            finally:
                self._handling.discard(task)
