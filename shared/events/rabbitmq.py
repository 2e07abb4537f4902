"""The full-stack bus: one durable topic exchange on RabbitMQ, quorum queues, dead letters."""

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelPreconditionFailed, DeliveryError
from pydantic import ValidationError

from shared import metrics
from shared.events.bus import PublishRefused, Subscription
from shared.events.cloudevents import CONTENT_TYPE, CloudEvent
from shared.logging import get_logger

log = get_logger(__name__)

PUBLISH_TIMEOUT_SECONDS = 5.0
CANCEL_TIMEOUT_SECONDS = 5.0


class RabbitBus:
    def __init__(
        self,
        url: str,
        exchange: str = "lyceum.events",
        *,
        delivery_limit: int = 5,
        prefetch: int = 32,
        consume_retry_seconds: float = 0.5,
    ) -> None:
        self._url = url
        self._exchange_name = exchange
        self._dead_letter_exchange_name = f"{exchange}.dlx"
        self._delivery_limit = delivery_limit
        self._prefetch = prefetch
        self._consume_retry_seconds = consume_retry_seconds
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._consume_channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._connected = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None
        # One task per consumed queue, kept so that it is neither garbage-collected nor
        # forgotten: it declares the queue, starts consuming and retries until it does.
        self._consumers: dict[str, asyncio.Task[None]] = {}
        self._consuming: set[str] = set()
        # Each consumed queue and its consumer tag, cancelled (basic.cancel) at shutdown.
        self._consumer_tags: dict[str, tuple[AbstractQueue, str]] = {}
        # The handlers running now: at shutdown each finishes and acks before the channel
        # closes.
        self._handling: set[asyncio.Task[Any]] = set()
        self._taking_deliveries = True
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connects in the background until the broker answers; the outbox waits meanwhile."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect_until_up())

    async def wait_connected(self, within_seconds: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), within_seconds)

    async def _connect_until_up(self) -> None:
        delay = 0.5
        while True:
            try:
                self._connection = await aio_pika.connect_robust(self._url, timeout=10)
                break
            except Exception as exc:
                log.warning("broker_unreachable", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        self._consume_channel = await self._connection.channel()
        await self._consume_channel.set_qos(prefetch_count=self._prefetch)
        self._exchange = await self._publish_channel.declare_exchange(
            self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await self._publish_channel.declare_exchange(
            self._dead_letter_exchange_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._connected.set()
        log.info("broker_connected", exchange=self._exchange_name)

    async def declare(self, subscription: Subscription) -> None:
        await self._declare(subscription)

    async def _declare(self, subscription: Subscription) -> AbstractQueue:
        await self._connected.wait()
        assert self._consume_channel is not None
        channel = self._consume_channel
        dead_letter_queue = await channel.declare_queue(
            f"{subscription.queue}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_letter_queue.bind(self._dead_letter_exchange_name, subscription.queue)
        queue = await channel.declare_queue(
            subscription.queue,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": self._dead_letter_exchange_name,
                "x-dead-letter-routing-key": subscription.queue,
                "x-delivery-limit": self._delivery_limit,
            },
        )
        for key in subscription.binding_keys:
            await queue.bind(self._exchange_name, key)
        return queue

    async def consume(self, subscription: Subscription) -> None:
        """Declares and consumes once the broker is reachable, without blocking start-up;
        until the queue is consumed, `is_ready` says no."""
        if subscription.queue in self._consumers:
            raise RuntimeError(f"already consuming {subscription.queue}")
        task = asyncio.create_task(
            self._consume_until_consuming(subscription), name=f"consume {subscription.queue}"
        )
        self._consumers[subscription.queue] = task
        metrics.add_refresher(self, self.refresh_metrics)

    async def refresh_metrics(self) -> None:
        """Consumer lag and dead letters of the queues this bus consumes, as the broker
        counts them (a passive declare, on a channel of its own: a queue deleted under us
        closes that channel, not the consumers')."""
        if not self._broker_connected() or self._connection is None:
            return
        queues = sorted(self._consuming)
        if not queues:
            return
        channel = await self._connection.channel()
        try:
            for name in queues:
                service = metrics.service_of_queue(name)
                queue = await channel.declare_queue(name, passive=True)
                ready = queue.declaration_result.message_count or 0
                metrics.EVENT_QUEUE_MESSAGES.labels(service, name).set(ready)
                dead_letters = await channel.declare_queue(f"{name}.dlq", passive=True)
                dead = dead_letters.declaration_result.message_count or 0
                metrics.EVENT_DEAD_LETTERS.labels(service, name).set(dead)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _consume_until_consuming(self, subscription: Subscription) -> None:
        delay = self._consume_retry_seconds
        while True:
            try:
                await self._declare_and_consume(subscription)
            except Exception:
                # E.g. PRECONDITION_FAILED: the queue exists with other arguments.
                log.exception("event_consumer_failed", queue=subscription.queue, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            else:
                # From here on the robust connection restores the consumer after an outage.
                self._consuming.add(subscription.queue)
                log.info("event_consumer_started", queue=subscription.queue)
                return

    async def _declare_and_consume(self, subscription: Subscription) -> None:
        handler = subscription.handler
        assert handler is not None
        queue = await self._declare(subscription)

        async def on_message(message: AbstractIncomingMessage) -> None:
            if not self._taking_deliveries:
                # Delivered while the consumer was being cancelled: left unacknowledged, it
                # goes back to the queue (for another consumer) when the channel closes.
                return
            task = asyncio.current_task()
            assert task is not None
            self._handling.add(task)
            try:
                await handle(message)
            finally:
                self._handling.discard(task)

        async def handle(message: AbstractIncomingMessage) -> None:
            try:
                event = CloudEvent.from_json(message.body)
            except ValidationError:
                log.error(
                    "event_malformed", queue=subscription.queue, message_id=message.message_id
                )
                await message.reject(requeue=False)
                return
            headers = {str(k): str(v) for k, v in (message.headers or {}).items()}
            try:
                await handler(event, headers)
            except Exception:
                log.exception("event_handler_failed", queue=subscription.queue, event_id=event.id)
                await message.nack(requeue=True)
                return
            await message.ack()

        tag = await queue.consume(on_message)
        self._consumer_tags[subscription.queue] = (queue, tag)

    async def publish(self, event: CloudEvent, headers: dict[str, str]) -> None:
        if not self._connected.is_set() or self._exchange is None:
            raise ConnectionError("broker not connected")
        assert self._connection is not None
        if self._connection.is_closed:
            raise ConnectionError("broker connection lost")
        message = aio_pika.Message(
            body=event.to_json(),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type,
            timestamp=event.time,
            headers=dict(headers),
        )
        try:
            await self._exchange.publish(
                message, routing_key=event.type, timeout=PUBLISH_TIMEOUT_SECONDS
            )
        except (DeliveryError, ChannelPreconditionFailed) as exc:
            # A nack, or the channel closed over this message (too large, for example):
            # the broker is there and refuses this one.
            raise PublishRefused(f"the broker refused event {event.id}: {exc!r}") from exc
        except ConnectionError:
            raise
        except Exception as exc:
            # Timeouts, closed channels, a missing exchange: nothing the message can help.
            raise ConnectionError(f"broker unavailable: {exc!r}") from exc

    def _broker_connected(self) -> bool:
        return (
            self._connected.is_set()
            and self._connection is not None
            and not self._connection.is_closed
            and self._consume_channel is not None
            and not self._consume_channel.is_closed
        )

    def consuming(self) -> bool:
        """Whether every queue this bus was asked to consume is being consumed."""
        return self._consuming == set(self._consumers)

    async def is_ready(self) -> bool:
        return self._broker_connected() and self.consuming()

    async def stop_consuming(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.create_task(self._stop_consuming())
        await asyncio.shield(self._stopping)

    async def _stop_consuming(self) -> None:
        self._taking_deliveries = False
        for task in self._consumers.values():
            task.cancel()
        await asyncio.gather(*self._consumers.values(), return_exceptions=True)
        for name, (queue, tag) in list(self._consumer_tags.items()):
            try:
                await queue.cancel(tag, timeout=CANCEL_TIMEOUT_SECONDS)
            except Exception as exc:
                log.warning("event_consumer_cancel_failed", queue=name, error=repr(exc))
        while self._handling:
            await asyncio.wait(set(self._handling))
        log.info("event_consumers_stopped", queues=sorted(self._consumer_tags))

    async def close(self) -> None:
        metrics.remove_refresher(self)
        tasks = [
            t
            for t in (self._connecting, self._stopping, *self._consumers.values())
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()
