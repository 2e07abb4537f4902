"""SIGTERM to one of two instances of a service under steady load behind the gateway: no
request fails, no event is lost or handled twice, and the instance exits 0 within its grace.

The stack is the test's own, on PostgreSQL, Redis and RabbitMQ: auth, the gateway, and two
processes of users listening on one port (SO_REUSEPORT: as with two pods behind a
Kubernetes Service, new connections go to whichever still listens). Users both serves
(GET and PATCH /users/me, each PATCH publishing `user.updated` through its outbox) and
consumes (`user.created`, from registrations through auth and published straight to the
exchange), so the instance that stops has requests in flight, event handlers running and
rows in its outbox."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from launcher.full import service_environment
from launcher.infrastructure import database_url
from launcher.options import LaunchOptions
from shared.events.cloudevents import CloudEvent
from shared.events.rabbitmq import RabbitBus
from shared.registry import AUTH, GATEWAY, USERS, Component
from shared.testing import Stack, eventually, wait_until
from tests.conftest import POSTGRES, _clean_full_stack, require_dependencies
from tests.e2e.helpers import PASSWORD, bearer, unique_email

GRACE_SECONDS = 10.0
CLIENTS = 6
PUBLISHED_PER_SECOND = 20
# Requests the stopping instance must have served, and events it must have handled, before
# it is sent SIGTERM; requests the gateway must answer, and events the other instance must
# handle, after it is gone (the load goes on for some seconds).
BEFORE_SIGTERM = 40
EVENTS_BEFORE_SIGTERM = 10
AFTER_EXIT = 300
EVENTS_AFTER_EXIT = 40


class StackProcess:
    """One process of the stack (`python -m <module>`), its JSON log lines in a file."""

    def __init__(self, name: str, module: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.module = module
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "StackProcess":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue  # a line being written, or one that is not JSON
        return found

    def count(self, event: str, **fields: Any) -> int:
        return sum(
            1
            for line in self.lines()
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        )

    def wait_logged(self, event: str, within_seconds: float = 60.0) -> None:
        def logged() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            return self.count(event) > 0

        wait_until(logged, within_seconds=within_seconds, interval=0.1)

    def terminate(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class ShutdownStack:
    names: Stack
    options: LaunchOptions
    workdir: Path
    processes: list[StackProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.options.url(0)

    def environment(self, entry: Component, **extra: str) -> dict[str, str]:
        env = service_environment(self.options, entry)
        env.update(
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            VAR_DIR=str(self.workdir / "var"),
            OUTBOX_POLL_SECONDS="0.5",
            RATE_LIMIT_AUTH="100000/minute",
            RATE_LIMIT_DEFAULT="100000/minute",
            SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
            **extra,
        )
        return env

    def start(self, name: str, entry: Component, **extra: str) -> StackProcess:
        process = StackProcess(name, entry.package, self.environment(entry, **extra), self.workdir)
        self.processes.append(process.start())
        return process

    def stop(self) -> None:
        for process in self.processes:
            if process.process is not None and process.process.poll() is None:
                process.terminate()
        for process in self.processes:
            if process.process is None:
                continue
            try:
                process.process.wait(timeout=GRACE_SECONDS + 5)
            except subprocess.TimeoutExpired:
                process.kill()


async def _create_databases(stack: ShutdownStack) -> None:
    connection = await asyncpg.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres")
    try:
        for entry in (AUTH, USERS):
            name = entry.database_name(stack.options.database_prefix)
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _migrate(stack: ShutdownStack) -> None:
    async def migrate(entry: Component) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            entry.package,
            "migrate",
            env=stack.environment(entry),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode == 0, output.decode(errors="replace")

    await asyncio.gather(migrate(AUTH), migrate(USERS))


async def _declare_users_queue(stack: ShutdownStack) -> None:
    bus = RabbitBus(stack.options.amqp_url, stack.options.events_exchange)
    await bus.start()
    try:
        await bus.wait_connected(within_seconds=15)
        subscription = USERS.subscription(stack.options.queue_prefix)
        assert subscription is not None
        await bus.declare(subscription)
    finally:
        await bus.close()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[ShutdownStack]:
    require_dependencies()
    names = Stack(mode="full", workdir=tmp_path)
    options = LaunchOptions(
        gateway_port=names.base_port,
        database_prefix=names.database_prefix,
        queue_prefix=names.queue_prefix,
        events_exchange=names.exchange,
        var_dir=str(tmp_path / "var"),
    )
    shutdown_stack = ShutdownStack(names, options, tmp_path)
    try:
        await _create_databases(shutdown_stack)
        await _migrate(shutdown_stack)
        await _declare_users_queue(shutdown_stack)
        shutdown_stack.start("auth", AUTH)
        await asyncio.to_thread(wait_until, lambda: _healthy(options.url(AUTH.port_offset)))
        for number in (1, 2):
            users = shutdown_stack.start(f"users-{number}", USERS, REUSE_PORT="true")
            await asyncio.to_thread(users.wait_logged, "event_consumer_started")
        shutdown_stack.start("gateway", GATEWAY, WORKERS="1")
        await asyncio.to_thread(wait_until, lambda: _healthy(options.url(0)), within_seconds=30)
        yield shutdown_stack
    finally:
        await asyncio.to_thread(shutdown_stack.stop)
        await _clean_full_stack(names)


# --- the load ---------------------------------------------------------------------------


@dataclass
class Tally:
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    patched: int = 0
    # Ids of the users whose `user.created` the users service must handle.
    created: list[str] = field(default_factory=list)

    async def attempt(self, request: Awaitable[httpx.Response], what: str) -> Any:
        try:
            response = await request
        except httpx.HTTPError as exc:
            self.failures.append(f"{what}: {exc!r}")
            return None
        if not 200 <= response.status_code < 300:
            self.failures.append(f"{what}: {response.status_code} {response.text[:300]}")
            return None
        self.answered += 1
        return response.json()


async def sign_up(client: httpx.AsyncClient, tally: Tally) -> dict[str, Any] | None:
    body = {"email": unique_email("sigterm"), "password": PASSWORD, "name": "Ada"}
    session: dict[str, Any] | None = await tally.attempt(
        client.post("/api/v1/auth/register", json=body), "register"
    )
    if session is not None:
        tally.created.append(session["user"]["id"])
    return session


async def browse_and_edit(
    client: httpx.AsyncClient, token: str, number: int, stop: asyncio.Event, tally: Tally
) -> None:
    """A user reading and changing their profile, again and again."""
    headers = bearer(token)
    round_number = 0
    while not stop.is_set():
        round_number += 1
        await tally.attempt(client.get("/api/v1/users/me", headers=headers), "GET /users/me")
        body = {"bio": f"client {number}, round {round_number}"}
        edit = client.patch("/api/v1/users/me", json=body, headers=headers)
        if await tally.attempt(edit, "PATCH /users/me") is not None:
            tally.patched += 1


async def keep_registering(client: httpx.AsyncClient, stop: asyncio.Event, tally: Tally) -> None:
    while not stop.is_set():
        await sign_up(client, tally)
        await asyncio.sleep(0.2)


async def keep_publishing(
    channel: AbstractChannel, exchange_name: str, stop: asyncio.Event, tally: Tally
) -> None:
    """`user.created` of accounts made elsewhere, straight to the exchange, as auth's relay
    would publish them (with publisher confirms)."""
    exchange = await channel.get_exchange(exchange_name)
    while not stop.is_set():
        user_id = str(uuid.uuid4())
        event = CloudEvent(
            source="lyceum/auth",
            type="user.created",
            subject=f"users/{user_id}",
            data={
                "id": user_id,
                "email": unique_email("published"),
                "name": "Grace",
                "role": "student",
            },
        )
        message = aio_pika.Message(
            event.to_json(),
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type,
        )
        await exchange.publish(message, routing_key=event.type)
        tally.created.append(user_id)
        await asyncio.sleep(1 / PUBLISHED_PER_SECOND)


async def observe(channel: AbstractChannel, exchange: str, binding: str) -> AbstractQueue:
    queue = await channel.declare_queue(
        f"observer-{uuid.uuid4().hex[:8]}", exclusive=True, auto_delete=True
    )
    await queue.bind(exchange, binding)
    return queue


async def message_ids(queue: AbstractQueue) -> list[str]:
    """The ids of every message in the queue."""
    ids: list[str] = []
    while (message := await queue.get(fail=False)) is not None:
        await message.ack()
        ids.append(str(message.message_id))
    return ids


async def users_query(stack: ShutdownStack, query: str, **values: Any) -> list[Any]:
    engine = create_async_engine(database_url(stack.options, USERS.name))
    try:
        async with engine.connect() as connection:
            return list(await connection.execute(text(query), values))
    finally:
        await engine.dispose()


async def profile_ids(stack: ShutdownStack, wanted: list[str]) -> set[str]:
    query = "SELECT CAST(id AS TEXT) FROM profiles WHERE CAST(id AS TEXT) = ANY(:ids)"
    return {row[0] for row in await users_query(stack, query, ids=wanted)}


# --- the test ---------------------------------------------------------------------------


async def test_sigterm_to_one_of_two_instances_under_load_fails_no_request_and_loses_no_event(
    stack: ShutdownStack,
) -> None:
    instances = [process for process in stack.processes if process.name.startswith("users-")]
    tally = Tally()
    connection = await aio_pika.connect(stack.options.amqp_url)
    async with (
        connection,
        httpx.AsyncClient(base_url=stack.url, timeout=30) as client,
    ):
        channel = await connection.channel()
        updates = await observe(channel, stack.options.events_exchange, "user.updated")

        sessions = [await sign_up(client, tally) for _ in range(CLIENTS)]
        tokens = [session["access_token"] for session in sessions if session is not None]
        assert len(tokens) == CLIENTS, tally.failures

        async def profiles_made() -> bool:
            answers = [await client.get("/api/v1/users/me", headers=bearer(t)) for t in tokens]
            return all(answer.status_code == 200 for answer in answers)

        await eventually(profiles_made, within_seconds=30, interval=0.2)

        stop = asyncio.Event()
        load = [
            asyncio.create_task(browse_and_edit(client, token, number, stop, tally))
            for number, token in enumerate(tokens)
        ]
        load.append(asyncio.create_task(keep_registering(client, stop, tally)))
        load.append(
            asyncio.create_task(
                keep_publishing(channel, stack.options.events_exchange, stop, tally)
            )
        )
        try:

            def busy(instance: StackProcess) -> bool:
                return (
                    instance.count("request", path="/api/v1/users/me") >= BEFORE_SIGTERM
                    and instance.count("event_processed") >= EVENTS_BEFORE_SIGTERM
                )

            async def one_is_busy() -> bool:
                return any(busy(instance) for instance in instances)

            # The kernel spreads the gateway's connections over both; stop a busy one.
            await eventually(one_is_busy, within_seconds=60, interval=0.2)
            stopping = next(instance for instance in instances if busy(instance))
            staying = next(instance for instance in instances if instance is not stopping)
            stopping.terminate()
            assert stopping.process is not None
            code = await asyncio.to_thread(stopping.process.wait, GRACE_SECONDS + 5)
            answered_at_exit = tally.answered
            handled_at_exit = staying.count("event_processed")

            async def served_on() -> bool:
                return (
                    tally.answered >= answered_at_exit + AFTER_EXIT
                    and staying.count("event_processed") >= handled_at_exit + EVENTS_AFTER_EXIT
                )

            await eventually(served_on, within_seconds=60, interval=0.2)
        finally:
            stop.set()
            await asyncio.gather(*load)

        # Every request of the load was answered with a 2xx.
        assert tally.failures == []
        assert code == 0
        gateway = next(process for process in stack.processes if process.name == "gateway")
        print(
            f"\n{tally.answered} requests answered ({tally.patched} PATCH), "
            f"{len(tally.created)} user.created events, none failed; "
            f"{gateway.count('upstream_retry')} sent again by the gateway",
            flush=True,
        )

        # Every event reached its effect: a profile for each user.created.
        async def all_handled() -> bool:
            return await profile_ids(stack, tally.created) == set(tally.created)

        await eventually(all_handled, within_seconds=60, interval=0.5)
        # ... exactly once: no event was handled by both instances, or twice by one (a
        # handled event left unacknowledged comes back, and is then ignored as a duplicate).
        lines = [line for instance in instances for line in instance.lines()]
        handled = Counter(
            line["event_id"] for line in lines if line.get("event") == "event_processed"
        )
        assert {event_id: n for event_id, n in handled.items() if n > 1} == {}
        duplicates = [line for line in lines if line.get("event") == "event_duplicate_ignored"]
        assert duplicates == []
        assert len(handled) >= len(tally.created)

        # Each PATCH wrote one `user.updated` (none was applied twice), and once the outboxes
        # are empty every one of them has reached the exchange once, whichever relay sent it.
        async def outbox_empty() -> bool:
            pending = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            return bool((await users_query(stack, pending))[0][0] == 0)

        await eventually(outbox_empty, within_seconds=60, interval=0.5)
        written = "SELECT id FROM outbox WHERE type = 'user.updated'"
        rows = [row[0] for row in await users_query(stack, written)]
        assert len(rows) == tally.patched
        assert sorted(await message_ids(updates)) == sorted(rows)

    # The stopping instance went through its shutdown, and both shared the work.
    assert stopping.count("shutdown_started") == 1
    assert stopping.count("event_consumers_stopped") == 1
    assert staying.count("event_processed") > 0
    assert staying.count("request", path="/api/v1/users/me") > 0
