"""The chat service sent SIGTERM while it streams replies: its streams end with their last
event instead of being cut; and a WebSocket whose token expires is closed. The service
runs as its own process (`python -m services.chat`, the offline `lyceum-dev` model,
SQLite), its callers' tokens checked against a local JWKS; the readers of another
replica's reply go through a real Redis."""

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from shared.migrations import upgrade_to_head_async
from shared.registry import CHAT
from shared.testing import eventually, free_port_block, token_claims
from tests.component.stub_server import StubServer
from tests.conftest import REDIS, require_dependencies
from tests.e2e.chat_helpers import SseStream, read_sse
from tests.processes import Process

KID = "shutdown-test-key"
# A question whose answer from `lyceum-dev` runs to some fifty words.
QUESTION = "Tell me about the Twelve Tables, the first written law of Rome, and its ten men."


class Jwks(StubServer):
    def add_routes(self, app: Any) -> None:
        return None


class ChatProcess(Process):
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__("chat", workdir, free_port_block(1))
        self.env = env

    def start(self) -> "ChatProcess":
        self._spawn(["-m", CHAT.package], {"PORT": str(self.port), **self.env})
        return self

    def terminate(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)

    async def exit_code(self, within_seconds: float) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, within_seconds)


class Deployment:
    """Chat processes sharing one database, one JWKS and (given a Redis) one Redis."""

    def __init__(self, workdir: Path, jwks: Jwks, key: Ed25519PrivateKey) -> None:
        self.workdir = workdir
        self.jwks = jwks
        self.key = key
        self.database_url = f"sqlite+aiosqlite:///{workdir / 'chat.db'}"
        self.queue_prefix = f"test-{uuid.uuid4().hex[:10]}"
        self.processes: list[ChatProcess] = []

    def start(self, **settings: str) -> ChatProcess:
        env = {
            "DATABASE_URL": self.database_url,
            "JWKS_URL": f"{self.jwks.url}/jwks.json",
            "QUEUE_PREFIX": self.queue_prefix,
            "LOG_FORMAT": "json",
            **settings,
        }
        process = ChatProcess(self.workdir, env)
        self.processes.append(process)
        return process.start()

    def headers(self, user_id: uuid.UUID) -> dict[str, str]:
        token = jwt.encode(
            token_claims(sub=str(user_id)), self.key, algorithm="EdDSA", headers={"kid": KID}
        )
        return {"Authorization": f"Bearer {token}"}

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    async with Jwks(jwks={"keys": [{**jwk, "kid": KID, "alg": "EdDSA", "use": "sig"}]}) as jwks:
        chat = Deployment(tmp_path, jwks, key)
        await upgrade_to_head_async(CHAT.migrations_dir, chat.database_url)
        try:
            yield chat
        finally:
            await asyncio.to_thread(chat.stop)


@pytest.fixture
async def redis_url(deployment: Deployment) -> AsyncIterator[str]:
    """The machine's Redis, where auth would have published the revocations (their
    marker, without which tokens are refused)."""
    require_dependencies("Redis")
    redis = Redis.from_url(f"redis://{REDIS[0]}:{REDIS[1]}/0")
    await redis.set(f"{deployment.queue_prefix}:revoked:ready", "1")
    try:
        yield f"redis://{REDIS[0]}:{REDIS[1]}/0"
    finally:
        keys = [key async for key in redis.scan_iter(f"{deployment.queue_prefix}:*")]
        await redis.delete(*keys)
        await redis.aclose()


async def until_closed(socket: Any, frames: list[dict[str, Any]]) -> ConnectionClosed:
    """Collects the socket's frames until it closes."""
    while True:
        try:
            frames.append(json.loads(await socket.recv()))
        except ConnectionClosed as closed:
            return closed


async def open_stream(
    client: httpx.AsyncClient, method: str, path: str, **options: Any
) -> tuple[httpx.Response, Callable[[], Any]]:
    """A streamed answer, and what closes it."""
    request = client.build_request(method, path, **options)
    response = await client.send(request, stream=True)
    assert response.status_code == 200, (await response.aread()).decode()
    return response, response.aclose


async def sigterm_mid_reply(
    chat: ChatProcess, headers: dict[str, str], *, after_deltas: int, grace_seconds: int
) -> SseStream:
    """Asks for a streamed reply, sends SIGTERM once `after_deltas` deltas came, and reads
    the stream to its end; the process must exit 0 within the grace."""
    async with httpx.AsyncClient(base_url=chat.url, timeout=30) as client:
        response, close = await open_stream(
            client,
            "POST",
            "/api/v1/chat",
            json={"message": QUESTION, "stream": True},
            headers=headers,
        )
        try:
            stream = SseStream(200, dict(response.headers))
            await read_sse(response, stream, stop_after_deltas=after_deltas)
            chat.terminate()
            await read_sse(response, stream)
        finally:
            await close()
        assert await chat.exit_code(within_seconds=grace_seconds + 5) == 0
    return stream


async def test_a_stream_the_grace_is_too_short_for_ends_with_the_reply_stopped_and_saved(
    deployment: Deployment,
) -> None:
    chat = deployment.start(CHAT_DEV_WORD_DELAY_SECONDS="0.5", SHUTDOWN_GRACE_SECONDS="4")
    headers = deployment.headers(uuid.uuid4())
    stream = await sigterm_mid_reply(chat, headers, after_deltas=2, grace_seconds=4)

    assert [event.kind for event in stream.events[:-1]] == ["chat_delta"] * len(stream.deltas)
    assert stream.last.kind == "chat_response"
    assert stream.last.data["finish_reason"] == "stopped"
    assert stream.last.data["message"] == stream.text
    assert len(stream.deltas) >= 2
    # Saved as it was sent: another process of the service replays it.
    again = deployment.start()
    async with httpx.AsyncClient(base_url=again.url, timeout=30) as client:
        saved = await client.get(f"/api/v1/messages/{stream.last.data['id']}", headers=headers)
    assert saved.status_code == 200, saved.text
    assert saved.json()["content"] == stream.text
    assert saved.json()["status"] == "stopped"


async def test_a_reply_that_fits_in_the_grace_finishes_and_its_stream_ends_normally(
    deployment: Deployment,
) -> None:
    chat = deployment.start(CHAT_DEV_WORD_DELAY_SECONDS="0.02", SHUTDOWN_GRACE_SECONDS="20")
    headers = deployment.headers(uuid.uuid4())
    stream = await sigterm_mid_reply(chat, headers, after_deltas=1, grace_seconds=20)

    assert stream.last.kind == "chat_response"
    assert stream.last.data["finish_reason"] == "stop"
    assert stream.last.data["message"] == stream.text
    assert "lyceum-dev" in stream.text


async def test_a_websocket_gets_its_replys_last_frame_then_closes_with_1012(
    deployment: Deployment,
) -> None:
    chat = deployment.start(CHAT_DEV_WORD_DELAY_SECONDS="0.5", SHUTDOWN_GRACE_SECONDS="4")
    token = deployment.headers(uuid.uuid4())["Authorization"].removeprefix("Bearer ")
    url = f"{chat.url.replace('http://', 'ws://')}/ws?token={token}"
    frames: list[dict[str, Any]] = []
    async with connect(url) as socket:
        await socket.send(json.dumps({"type": "chat", "data": {"message": QUESTION}}))
        while len(frames) < 2:
            frames.append(json.loads(await socket.recv()))
        chat.terminate()
        closed = await until_closed(socket, frames)
    assert await chat.exit_code(within_seconds=4 + 5) == 0

    assert closed.rcvd is not None
    assert closed.rcvd.code == 1012
    assert [frame["type"] for frame in frames[:-1]] == ["chat_delta"] * (len(frames) - 1)
    assert frames[-1]["type"] == "chat_response"
    assert frames[-1]["data"]["finish_reason"] == "stopped"
    text = "".join(frame["data"]["delta"] for frame in frames[:-1])
    assert frames[-1]["data"]["message"] == text


async def test_an_idle_websocket_is_closed_with_4401_when_its_token_expires(
    deployment: Deployment,
) -> None:
    chat = deployment.start()
    claims = token_claims(exp=int(time.time()) + 3)
    token = jwt.encode(claims, deployment.key, algorithm="EdDSA", headers={"kid": KID})
    url = f"{chat.url.replace('http://', 'ws://')}/ws?token={token}"
    frames: list[dict[str, Any]] = []
    async with connect(url) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        closed = await asyncio.wait_for(until_closed(socket, frames), 15)

    assert closed.rcvd is not None
    assert closed.rcvd.code == 4401
    assert [frame["type"] for frame in frames] == ["pong", "error"]
    assert frames[-1]["data"]["code"] == "TOKEN_EXPIRED"


async def test_a_reader_of_another_replicas_reply_is_told_to_resume_there(
    deployment: Deployment, redis_url: str
) -> None:
    settings = {"REDIS_URL": redis_url, "CHAT_DEV_WORD_DELAY_SECONDS": "0.1"}
    writer = deployment.start(**settings)
    reader = deployment.start(SHUTDOWN_GRACE_SECONDS="4", **settings)
    headers = deployment.headers(uuid.uuid4())
    async with httpx.AsyncClient(timeout=30) as client:
        started, close_started = await open_stream(
            client,
            "POST",
            f"{writer.url}/api/v1/chat",
            json={"message": QUESTION, "stream": True},
            headers=headers,
        )
        try:
            generated = SseStream(200, dict(started.headers))
            await read_sse(started, generated, stop_after_deltas=1)
            reply_id = generated.deltas[0].data["id"]
            followed, close_followed = await open_stream(
                client, "GET", f"{reader.url}/api/v1/messages/{reply_id}/stream", headers=headers
            )
            try:
                elsewhere = SseStream(200, dict(followed.headers))
                await read_sse(followed, elsewhere, stop_after_deltas=2)
                reader.terminate()
                await read_sse(followed, elsewhere)
            finally:
                await close_followed()
            assert await reader.exit_code(within_seconds=4 + 5) == 0
            await read_sse(started, generated)
        finally:
            await close_started()

        going_away = elsewhere.last
        assert going_away.kind == "error"
        assert going_away.data["code"] == "SERVICE_UNAVAILABLE"
        assert going_away.id == str(len(elsewhere.text))
        assert f"/api/v1/messages/{reply_id}/stream" in going_away.data["message"]
        # Resumed where it said, on the replica that generates the reply.
        resumed = SseStream(200, {})
        response, close = await open_stream(
            client,
            "GET",
            f"{writer.url}/api/v1/messages/{reply_id}/stream",
            headers={**headers, "Last-Event-ID": going_away.id},
        )
        try:
            await read_sse(response, resumed)
        finally:
            await close()

    assert generated.last.kind == "chat_response"
    assert generated.last.data["finish_reason"] == "stop"
    assert resumed.last == generated.last
    assert elsewhere.text + resumed.text == generated.last.data["message"]


async def test_ready_says_503_from_the_signal_on_while_requests_are_still_served(
    deployment: Deployment,
) -> None:
    chat = deployment.start(SHUTDOWN_DELAY_SECONDS="3", SHUTDOWN_GRACE_SECONDS="4")
    async with httpx.AsyncClient(base_url=chat.url, timeout=5) as client:
        before = await client.get("/ready")
        assert before.status_code == 200, before.text
        assert before.json()["checks"]["accepting_requests"] == "ok"
        chat.terminate()

        async def refused() -> httpx.Response | None:
            answer = await client.get("/ready")
            return answer if answer.status_code == 503 else None

        ready = await eventually(refused, within_seconds=10, interval=0.05)
        health = await client.get("/health")
    assert ready.status_code == 503
    assert ready.json()["checks"]["accepting_requests"] == "unavailable"
    assert health.status_code == 200
    assert await chat.exit_code(within_seconds=3 + 4 + 5) == 0


async def test_a_request_in_flight_is_answered_with_connection_close(
    deployment: Deployment,
) -> None:
    chat = deployment.start(CHAT_DEV_WORD_DELAY_SECONDS="0.05", SHUTDOWN_GRACE_SECONDS="20")
    headers = deployment.headers(uuid.uuid4())
    async with (
        httpx.AsyncClient(base_url=chat.url, timeout=30) as client,
        httpx.AsyncClient(base_url=chat.url, timeout=30) as watcher,
    ):
        asking = asyncio.create_task(
            client.post("/api/v1/chat", json={"message": QUESTION}, headers=headers)
        )

        async def generating() -> bool:
            conversations = await watcher.get("/api/v1/conversations", headers=headers)
            return bool(conversations.json()["data"])

        await eventually(generating, within_seconds=15, interval=0.05)
        chat.terminate()
        answer = await asking
        assert await chat.exit_code(within_seconds=20 + 5) == 0

    assert answer.status_code == 201, answer.text
    assert answer.headers["connection"] == "close"
    assert answer.json()["finish_reason"] == "stop"
