"""The in-process bus keeps the semantics of the RabbitMQ topology it stands in for."""

import asyncio
from typing import Any

import pytest

from shared.events.bus import Subscription, topic_matches
from shared.events.cloudevents import CloudEvent
from shared.events.inprocess import InProcessBus


@pytest.mark.parametrize(
    ("binding", "routing_key", "matches"),
    [
        ("user.created", "user.created", True),
        ("user.*", "user.created", True),
        ("user.*", "user.profile.updated", False),
        ("user.#", "user.profile.updated", True),
        ("user.#", "user", True),
        ("#", "course.published", True),
        ("*.published", "course.published", True),
        ("*", "course.published", False),
        ("course.*", "user.created", False),
        ("#.completed", "lesson.completed", True),
        ("#.completed", "completed", True),
    ],
)
def test_topic_matching_follows_amqp(binding: str, routing_key: str, matches: bool) -> None:
    assert topic_matches(binding, routing_key) is matches


def event(event_type: str = "user.created") -> CloudEvent:
    return CloudEvent(source="lyceum/test", type=event_type, data={"n": 1})


async def next_of(queue: "asyncio.Queue[Any]") -> Any:
    return await asyncio.wait_for(queue.get(), 10)


async def test_a_declared_queue_keeps_messages_until_a_consumer_attaches() -> None:
    bus = InProcessBus()
    received: asyncio.Queue[str] = asyncio.Queue()

    async def handler(message: CloudEvent, headers: dict[str, str]) -> None:
        received.put_nowait(message.type)

    subscription = Subscription("q", ("user.*",), handler)
    await bus.declare(subscription)
    await bus.publish(event("user.created"), {})
    await bus.publish(event("course.created"), {})
    await bus.consume(subscription)
    # A queue delivers in order: once the marker published last is in, whatever the
    # queue held before it has been delivered too.
    await bus.publish(event("user.marker"), {})
    try:
        assert await next_of(received) == "user.created"
        assert await next_of(received) == "user.marker"
    finally:
        await bus.close()
    assert received.empty()


async def test_a_failing_handler_gets_redeliveries_then_the_message_is_dead_lettered() -> None:
    bus = InProcessBus(delivery_limit=3)
    attempts: asyncio.Queue[str] = asyncio.Queue()
    failed_once: set[str] = set()

    async def flaky(message: CloudEvent, headers: dict[str, str]) -> None:
        attempts.put_nowait(message.id)
        if message.data.get("poison"):
            raise RuntimeError("cannot handle this one")
        if message.id not in failed_once:
            failed_once.add(message.id)
            raise RuntimeError("transient")

    await bus.consume(Subscription("q", ("#",), flaky))
    good = event()
    poison = CloudEvent(source="lyceum/test", type="user.created", data={"poison": True})
    marker = event()
    failed_once.add(marker.id)
    await bus.publish(good, {})
    try:
        assert [await next_of(attempts) for _ in range(2)] == [good.id, good.id]
        await bus.publish(poison, {})
        assert [await next_of(attempts) for _ in range(3)] == [poison.id] * 3
        # The marker comes after the poison's last delivery: once it is handled, the
        # poison has been dead-lettered and nothing is delivered again.
        await bus.publish(marker, {})
        assert await next_of(attempts) == marker.id
    finally:
        await bus.close()
    assert attempts.empty()
    assert [e.id for e in bus.dead_letters("q")] == [poison.id]


async def test_every_matching_queue_gets_its_own_copy() -> None:
    bus = InProcessBus()
    seen: dict[str, asyncio.Queue[tuple[str, str]]] = {"a": asyncio.Queue(), "b": asyncio.Queue()}

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(message: CloudEvent, headers: dict[str, str]) -> None:
            seen[name].put_nowait((message.type, headers.get("traceparent", "")))

        return handler

    await bus.consume(Subscription("a", ("user.*",), handler_for("a")))
    await bus.consume(Subscription("b", ("#",), handler_for("b")))
    await bus.publish(event(), {"traceparent": "00-abc-def-01"})
    await bus.publish(event("user.marker"), {})
    try:
        for name in ("a", "b"):
            assert await next_of(seen[name]) == ("user.created", "00-abc-def-01")
            # One copy each: the next message a queue delivers is the marker.
            assert await next_of(seen[name]) == ("user.marker", "")
    finally:
        await bus.close()


async def test_a_handler_that_changes_the_data_does_not_change_another_queues_copy() -> None:
    bus = InProcessBus()
    changed = asyncio.Event()
    seen_by_b: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def changes_its_copy(message: CloudEvent, headers: dict[str, str]) -> None:
        message.data["n"] = 2
        message.data["profile"]["name"] = "changed"
        changed.set()

    async def reads_its_copy(message: CloudEvent, headers: dict[str, str]) -> None:
        await changed.wait()
        seen_by_b.put_nowait(message.data)

    await bus.consume(Subscription("a", ("user.*",), changes_its_copy))
    await bus.consume(Subscription("b", ("#",), reads_its_copy))
    published = CloudEvent(
        source="lyceum/test", type="user.created", data={"n": 1, "profile": {"name": "Ada"}}
    )
    await bus.publish(published, {})
    try:
        data = await asyncio.wait_for(seen_by_b.get(), 10)
    finally:
        await bus.close()
    assert data == {"n": 1, "profile": {"name": "Ada"}}
    assert published.data == {"n": 1, "profile": {"name": "Ada"}}
