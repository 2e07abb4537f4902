"""Webhook workers on the real PostgreSQL and RabbitMQ: two of them share the load without
sending anything twice, and one killed mid-burst loses nothing."""

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx

from shared.testing import Stack, eventually, free_port_block
from tests.e2e.helpers import admin_tokens, register, signed_up
from tests.e2e.webhook_receivers import (
    Received,
    Receiver,
    about_names,
    create_endpoint,
    delete_endpoint,
    names_delivered,
    receiving,
    rename_burst,
)


class Worker:
    """One more `python -m services.webhooks` process on the stack's database and queue."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.stack = stack
        self.port = free_port_block(1)
        self.log_path = stack.workdir / f"webhooks-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        env = self.stack.environment()
        env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            DATABASE_URL=(
                f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.stack.database_prefix}_webhooks"
            ),
            JWKS_URL=f"{self.stack.service_url(1)}/api/v1/auth/.well-known/jwks.json",
        )
        return env

    async def start(self) -> "Worker":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "services.webhooks"],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        async def healthy() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"http://127.0.0.1:{self.port}/ready")
                return response.status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(healthy, within_seconds=30, interval=0.2)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def attempts_logged(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@contextlib.asynccontextmanager
async def extra_worker(stack: Stack, name: str) -> AsyncIterator[Worker]:
    worker = await Worker(stack, name).start()
    try:
        yield worker
    finally:
        worker.kill()


def attempt_lines(log: str) -> list[dict[str, Any]]:
    """The `webhook_attempt` lines of a log: only a worker that sent an attempt writes one
    (unlike, say, `event_processed`, which also names the event id). Processes sharing a
    log file can glue two JSON lines together, so every object on a line counts."""
    decoder = json.JSONDecoder()
    entries = []
    for line in log.splitlines():
        if '"webhook_attempt"' not in line:
            continue
        position = line.find("{")
        while position != -1:
            try:
                entry, end = decoder.raw_decode(line, position)
            except ValueError:
                position = line.find("{", position + 1)
                continue
            if isinstance(entry, dict) and entry.get("event") == "webhook_attempt":
                entries.append(entry)
            position = line.find("{", end)
    return entries


def successes(log: str, message_ids: set[str]) -> Counter[str]:
    """How many successful attempts of each of `message_ids` the log records."""
    return Counter(
        entry["message_id"]
        for entry in attempt_lines(log)
        if entry["message_id"] in message_ids
        and entry["error"] is None
        and 200 <= (entry["status"] or 0) < 300
    )


async def test_two_workers_share_the_load_without_double_delivery(full_stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"share-{tag}-{i}" for i in range(40)]
    async with (
        full_stack.client() as client,
        receiving() as receiver,
        extra_worker(full_stack, f"share-{tag}") as worker,
    ):
        admin = await admin_tokens(client)
        _, tokens = await signed_up(client)
        endpoint = await create_endpoint(client, admin, receiver, ["user.updated"])
        try:
            await rename_burst(client, tokens, names)

            async def all_delivered() -> bool:
                return names_delivered(receiver, names) == set(names)

            await eventually(all_delivered, within_seconds=60)
            received = about_names(receiver, names)
            counts = Counter(r.webhook_id for r in received)
            assert len(counts) == len(names)
            assert set(counts.values()) == {1}, "a message was sent twice"
            ids = set(counts)

            async def all_logged() -> bool:
                both = successes(worker.attempts_logged(), ids) + successes(
                    full_stack.log_path.read_text(), ids
                )
                return set(both) == ids

            await eventually(all_logged, within_seconds=30)
            by_extra = successes(worker.attempts_logged(), ids)
            by_stack = successes(full_stack.log_path.read_text(), ids)
            assert by_extra, "the extra worker sent nothing"
            assert by_stack, "the stack's own worker sent nothing"
            # Each message was sent with success exactly once, by one of the two.
            assert by_extra.keys().isdisjoint(by_stack.keys())
            assert set((by_extra + by_stack).values()) == {1}
        finally:
            await delete_endpoint(client, admin, endpoint)


async def test_a_worker_killed_mid_burst_loses_nothing(full_stack: Stack) -> None:
    tag = uuid.uuid4().hex[:6]
    names = [f"crash-{tag}-{i}" for i in range(60)]

    async def slow_ok(_received: Received, _earlier: list[Received]) -> int:
        await asyncio.sleep(0.05)
        return 200

    async with full_stack.client() as client, receiving(slow_ok) as receiver:
        admin = await admin_tokens(client)
        _, tokens = await signed_up(client)
        endpoint = await create_endpoint(client, admin, receiver, ["user.updated"])
        victim = await Worker(full_stack, f"victim-{tag}").start()
        try:
            burst = asyncio.create_task(rename_burst(client, tokens, names, pause=0.02))

            async def some_delivered() -> bool:
                return len(about_names(receiver, names)) >= 10

            await eventually(some_delivered, within_seconds=30)
            assert not burst.done(), "the burst ended before the kill"
            victim.kill()
            await burst
            async with extra_worker(full_stack, f"restarted-{tag}"):

                async def all_delivered() -> bool:
                    return names_delivered(receiver, names) == set(names)

                await eventually(all_delivered, within_seconds=60, interval=0.5)
            unique = {r.webhook_id for r in about_names(receiver, names)}
            assert len(unique) == len(names)
        finally:
            victim.kill()
            await delete_endpoint(client, admin, endpoint)


async def test_the_webhooks_service_killed_mid_burst_loses_nothing(full_stack: Stack) -> None:
    """The stack's own webhooks service is SIGKILLed while 30 sign-ups happen: the launcher
    restarts it, and every event reaches both endpoints that subscribe to it."""
    tag = uuid.uuid4().hex[:6]
    emails = [f"kill-{tag}-{i}@example.com" for i in range(30)]

    async def slow_ok(_received: Received, _earlier: list[Received]) -> int:
        await asyncio.sleep(0.05)
        return 200

    async def sign_up_all() -> None:
        for email in emails:
            await register(client, email=email)
            await asyncio.sleep(0.05)

    async with (
        full_stack.client() as client,
        receiving(slow_ok) as first,
        receiving() as second,
    ):
        admin = await admin_tokens(client)
        endpoints = [
            await create_endpoint(client, admin, first, ["user.created"]),
            await create_endpoint(client, admin, second, ["user.*"]),
        ]
        try:
            burst = asyncio.create_task(sign_up_all())

            async def some_delivered() -> bool:
                return len(signed_up_emails(first, emails)) >= 3

            await eventually(some_delivered, within_seconds=30)
            assert not burst.done(), "the burst ended before the kill"
            old_pid = full_stack.kill_service("webhooks")
            await burst
            await full_stack.wait_service_restarted("webhooks", old_pid, full_stack.service_url(6))

            async def all_delivered() -> bool:
                return all(
                    signed_up_emails(receiver, emails) == set(emails)
                    for receiver in (first, second)
                )

            await eventually(all_delivered, within_seconds=90, interval=0.5)
            for receiver in (first, second):
                about = [r for r in receiver.received if r.payload and is_sign_up(r, emails)]
                assert len({r.webhook_id for r in about}) == len(emails)  # one id per event
                assert len({r.payload["data"]["email"] for r in about if r.payload}) == len(emails)
            # The same event has the same webhook-id at both endpoints.
            assert ids_by_email(first, emails) == ids_by_email(second, emails)
        finally:
            for endpoint in endpoints:
                await delete_endpoint(client, admin, endpoint)


def is_sign_up(received: Received, emails: list[str]) -> bool:
    return bool(
        received.payload
        and received.payload["type"] == "user.created"
        and received.payload["data"].get("email") in emails
    )


def signed_up_emails(receiver: Receiver, emails: list[str]) -> set[str]:
    return {
        r.payload["data"]["email"]
        for r in receiver.received
        if r.payload is not None and is_sign_up(r, emails)
    }


def ids_by_email(receiver: Receiver, emails: list[str]) -> dict[str, set[str]]:
    ids: dict[str, set[str]] = {}
    for r in receiver.received:
        if r.payload is not None and is_sign_up(r, emails):
            ids.setdefault(r.payload["data"]["email"], set()).add(r.webhook_id)
    return ids
