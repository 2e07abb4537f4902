"""A RabbitMQ consumer that cannot start is logged, retried, and keeps the service out of
readiness until it consumes; the launcher declares queues with the configured delivery
limit, so the services' own declarations agree with it."""

import asyncio

import pytest

from launcher import infrastructure
from launcher.options import LaunchOptions
from shared.events.bus import Subscription
from shared.events.cloudevents import CloudEvent
from shared.events.rabbitmq import RabbitBus
from shared.logging import configure_logging
from shared.testing import eventually
from tests.conftest import LogLines


async def ignore(event: CloudEvent, headers: dict[str, str]) -> None:
    return None


SUBSCRIPTION = Subscription("lyceum.users", ("user.created",), ignore)


class ConnectedBus(RabbitBus):
    """Connected as far as is_ready can tell; declaring and consuming fails `failures`
    times (as it does when the queue exists with other arguments), then succeeds."""

    def __init__(self, failures: int) -> None:
        super().__init__("amqp://nowhere/", consume_retry_seconds=0.01)
        self.failures = failures
        self.attempts = 0
        self.may_succeed = asyncio.Event()

    def _broker_connected(self) -> bool:
        return True

    async def _declare_and_consume(self, subscription: Subscription) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise RuntimeError("PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit'")
        await self.may_succeed.wait()

    async def tried(self, times: int) -> bool:
        return self.attempts >= times


async def test_a_bus_without_consumers_is_ready_when_connected() -> None:
    bus = ConnectedBus(failures=0)
    assert await bus.is_ready()


async def test_a_consumer_that_fails_is_logged_retried_and_not_ready_until_it_consumes(
    log_lines: LogLines,
) -> None:
    configure_logging("users", "INFO", "json")
    bus = ConnectedBus(failures=2)
    await bus.consume(SUBSCRIPTION)
    assert not await bus.is_ready()

    await eventually(lambda: bus.tried(3))
    assert not await bus.is_ready()
    bus.may_succeed.set()
    await eventually(bus.is_ready)

    lines = log_lines.read()
    failures = [line for line in lines if line["event"] == "event_consumer_failed"]
    assert [line["queue"] for line in failures] == ["lyceum.users", "lyceum.users"]
    assert "PRECONDITION_FAILED" in failures[0]["exception"]
    assert any(line["event"] == "event_consumer_started" for line in lines)
    await bus.close()


async def test_close_stops_a_consumer_that_is_still_trying() -> None:
    bus = ConnectedBus(failures=0)
    await bus.consume(SUBSCRIPTION)
    await eventually(lambda: bus.tried(1))
    await bus.close()
    assert not await bus.is_ready()


async def test_the_launcher_declares_queues_with_the_configured_delivery_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits: list[int] = []

    class RecordingBus(RabbitBus):
        async def start(self) -> None:
            limits.append(self._delivery_limit)

        async def wait_connected(self, within_seconds: float | None = None) -> None:
            return None

        async def declare(self, subscription: Subscription) -> None:
            return None

    monkeypatch.setattr(infrastructure, "RabbitBus", RecordingBus)
    monkeypatch.setenv("EVENT_DELIVERY_LIMIT", "9")
    await infrastructure.declare_topology(LaunchOptions())
    assert limits == [9]
