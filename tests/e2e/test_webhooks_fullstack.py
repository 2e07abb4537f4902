"""Webhook workers on the real PostgreSQL and RabbitMQ: two of them share the load without
sending anything twice, and one killed mid-burst loses nothing."""

import asyncio
import contextlib
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
from tests.e2e.helpers import admin_tokens, bearer, signed_up
from tests.e2e.test_webhooks import Received, Receiver, create_endpoint, delete_endpoint, receiving


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


async def rename_burst(
    client: httpx.AsyncClient, tokens: dict[str, Any], names: list[str], pause: float = 0.0
) -> None:
    """One `user.updated` per name, each committed before the next."""
    for name in names:
        response = await client.patch(
            "/api/v1/users/me", headers=bearer(tokens), json={"name": name}
        )
        assert response.status_code == 200, response.text
        await asyncio.sleep(pause)


def about_names(receiver: Receiver, names: list[str]) -> list[Received]:
    wanted = set(names)
    return [
        r
        for r in receiver.received
        if r.payload is not None
        and r.payload["type"] == "user.updated"
        and r.payload["data"]["name"] in wanted
    ]


def names_delivered(receiver: Receiver, names: list[str]) -> set[str]:
    return {r.payload["data"]["name"] for r in about_names(receiver, names) if r.payload}


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

            await eventually(all_delivered, within_seconds=30)
            received = about_names(receiver, names)
            counts = Counter(r.webhook_id for r in received)
            assert len(counts) == len(names)
            assert set(counts.values()) == {1}, "a message was sent twice"
            ids = set(counts)
            by_extra = {i for i in ids if i in worker.attempts_logged()}
            by_stack = {i for i in ids if i in full_stack.log_path.read_text()}
            assert by_extra, "the extra worker sent nothing"
            assert by_stack, "the stack's own worker sent nothing"
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
