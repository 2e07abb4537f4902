"""What an event bus does, whichever one runs: RabbitMQ in the full stack, in-process embedded."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from shared.events.cloudevents import CloudEvent

EventHandler = Callable[[CloudEvent, dict[str, str]], Awaitable[None]]


class PublishRefused(Exception):
    """The bus is up but refuses this one message (the broker nacked it, or closed the
    channel over it); other messages may well go through. Any other failure to publish is
    the bus being unavailable (`ConnectionError`)."""


@dataclass(frozen=True)
class Subscription:
    """A durable queue of one consuming service and the routing keys bound to it."""

    queue: str
    binding_keys: tuple[str, ...]
    handler: EventHandler | None = field(default=None, compare=False)


class EventBus(Protocol):
    async def start(self) -> None: ...

    async def declare(self, subscription: Subscription) -> None: ...

    async def consume(self, subscription: Subscription) -> None: ...

    async def publish(self, event: CloudEvent, headers: dict[str, str]) -> None:
        """Returns once the broker has confirmed the message. Raises `ConnectionError` while
        the broker is unreachable, `PublishRefused` when it refuses this message."""

    async def is_ready(self) -> bool: ...

    async def stop_consuming(self) -> None:
        """Takes no more deliveries and returns once the handlers already running have
        finished and acknowledged their messages. What was delivered and not handled is
        left unacknowledged, for the broker to give to another consumer. Idempotent."""

    async def close(self) -> None: ...


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic semantics: `*` is exactly one word, `#` zero or more."""
    return _words_match(tuple(binding_key.split(".")), tuple(routing_key.split(".")))


@lru_cache(maxsize=4096)
def _words_match(binding: tuple[str, ...], routing: tuple[str, ...]) -> bool:
    if not binding:
        return not routing
    head, rest = binding[0], binding[1:]
    if head == "#":
        return any(_words_match(rest, routing[i:]) for i in range(len(routing) + 1))
    if not routing:
        return False
    return head in ("*", routing[0]) and _words_match(rest, routing[1:])
