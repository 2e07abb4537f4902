"""The in-process bus keeps the semantics of the RabbitMQ topology it stands in for."""

import asyncio

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


async def test_a_declared_queue_keeps_messages_until_a_consumer_attaches() -> None:
    bus = InProcessBus()
    received: list[str] = []

    async def handler(message: CloudEvent, headers: dict[str, str]) -> None:
        received.append(message.type)

    subscription = Subscription("q", ("user.*",), handler)
    await bus.declare(subscription)
    await bus.publish(event("user.created"), {})
    await bus.publish(event("course.created"), {})
    await bus.consume(subscription)
    await asyncio.sleep(0.05)
    await bus.close()
    assert received == ["user.created"]


async def test_a_failing_handler_gets_redeliveries_then_the_message_is_dead_lettered() -> None:
    bus = InProcessBus(delivery_limit=3)
    attempts: list[str] = []

    async def flaky(message: CloudEvent, headers: dict[str, str]) -> None:
        attempts.append(message.id)
        if message.data.get("poison"):
            raise RuntimeError("cannot handle this one")
        if len(attempts) == 1:
            raise RuntimeError("transient")

    await bus.consume(Subscription("q", ("#",), flaky))
    good = event()
    await bus.publish(good, {})
    await asyncio.sleep(0.05)
    assert attempts == [good.id, good.id]

    poison = CloudEvent(source="lyceum/test", type="user.created", data={"poison": True})
    await bus.publish(poison, {})
    await asyncio.sleep(0.05)
    await bus.close()
    assert attempts.count(poison.id) == 3
    assert [e.id for e in bus.dead_letters("q")] == [poison.id]


async def test_every_matching_queue_gets_its_own_copy() -> None:
    bus = InProcessBus()
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name: str):  # type: ignore[no-untyped-def]
        async def handler(message: CloudEvent, headers: dict[str, str]) -> None:
            seen[name].append(headers.get("traceparent", ""))

        return handler

    await bus.consume(Subscription("a", ("user.*",), handler_for("a")))
    await bus.consume(Subscription("b", ("#",), handler_for("b")))
    await bus.publish(event(), {"traceparent": "00-abc-def-01"})
    await asyncio.sleep(0.05)
    await bus.close()
    assert seen == {"a": ["00-abc-def-01"], "b": ["00-abc-def-01"]}


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
