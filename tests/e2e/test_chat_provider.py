"""Chat pointed at an outside OpenAI-compatible provider (a local stub server): what it is
sent, the usage it reports, its failures, and replies stopped, abandoned and resumed.

One embedded stack of its own, started with CHAT_PROVIDER_BASE_URL at the stub."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from shared.testing import Stack, eventually
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.e2e.chat_helpers import (
    SseStream,
    chat_user,
    frames_until_end,
    next_frame,
    read_sse,
    stream_get,
    stream_post,
    websocket_url,
)
from tests.e2e.helpers import admin_tokens, assert_envelope, bearer
from tests.openai_stub import PROMPT_TOKENS_BASE, OpenAIStub

API_KEY = "sk-lyceum-test"
DAILY_LIMIT = 5000
SLOW_TOKENS, SLOW_INTERVAL = 300, 0.02  # six seconds of answer


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(models=["stub-model", "stub-large"], api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def provider_stack(stub: OpenAIStub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "LYCEUM_ADMIN_EMAIL": ADMIN_EMAIL,
        "LYCEUM_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "RATE_LIMIT_AUTH": "10000/minute",
        "RATE_LIMIT_DEFAULT": "10000/minute",
        "RATE_LIMIT_ADMIN": "10000/minute",
        "CHAT_PROVIDER_BASE_URL": stub.base_url,
        "CHAT_PROVIDER_API_KEY": API_KEY,
        "CHAT_PROVIDER_MODELS": "",
        "CHAT_PROVIDER_READ_TIMEOUT_SECONDS": "1.5",
        "CHAT_PROVIDER_MAX_RETRIES": "1",
        "CHAT_DAILY_TOKEN_LIMIT": str(DAILY_LIMIT),
        "CHAT_MAX_CONCURRENT_STREAMS": "2",
    }
    workdir: Path = tmp_path_factory.mktemp("provider-stack")
    stack = Stack(mode="embedded", workdir=workdir, env_overrides=env)
    try:
        stack.start()
    except Exception:
        print(stack.log_tail())
        raise
    yield stack
    stack.stop()


@pytest.fixture(autouse=True)
def calm_stub(stub: OpenAIStub) -> Iterator[None]:
    """Each test changes the stub's behaviour as it needs; it is put back afterwards."""
    yield
    stub.tokens, stub.interval, stub.fail_status, stub.fail_times = None, 0.0, None, None
    stub.hang, stub.cut_after = False, None


@pytest.fixture
async def client(provider_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with provider_stack.client() as http:
        yield http


async def test_models_are_read_from_the_provider(client: httpx.AsyncClient) -> None:
    user = await chat_user(client)
    listed = (await client.get("/api/v1/models", headers=user)).json()["data"]
    assert [(m["id"], m["default"]) for m in listed] == [
        ("stub-model", True),
        ("stub-large", False),
    ]
    assert_envelope(
        await client.post("/api/v1/chat", json={"message": "hi", "model": "gpt-x"}, headers=user),
        400,
        "VALIDATION_ERROR",
    )


async def test_the_provider_gets_the_key_parameters_prompt_and_history(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    admin = bearer(await admin_tokens(client))
    name = f"coach-{uuid.uuid4().hex[:8]}"
    await client.post("/api/v1/prompts", json={"name": name, "content": "Coach v1"}, headers=admin)
    await client.post(
        f"/api/v1/prompts/{name}/versions", json={"content": "Coach v2"}, headers=admin
    )
    user = await chat_user(client)
    conversation = await client.post(
        "/api/v1/conversations", json={"model": "stub-large", "prompt": name}, headers=user
    )
    path = f"/api/v1/conversations/{conversation.json()['id']}/messages"
    first = await client.post(path, json={"content": "One"}, headers=user)
    assert first.status_code == 201, first.text
    await client.put(
        f"/api/v1/prompts/{name}/labels/production", json={"version": 2}, headers=admin
    )
    stub.requests.clear()
    second = await client.post(
        path, json={"content": "Two", "temperature": 0.3, "max_tokens": 50}, headers=user
    )
    assert second.status_code == 201, second.text

    (sent,) = stub.requests
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    body = sent.body
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("stub-large", 0.3, 50)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    earlier_reply = first.json()["assistant_message"]["content"]
    assert body["messages"] == [
        {"role": "system", "content": "Coach v2"},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": earlier_reply},
        {"role": "user", "content": "Two"},
    ]
    reply = second.json()["assistant_message"]
    assert reply["content"] == stub.reply_text()
    assert reply["prompt"] == {"name": name, "version": 2}
    # What the provider reported is what is stored and returned, not a local count.
    expected = {
        "prompt_tokens": PROMPT_TOKENS_BASE + 4,
        "completion_tokens": len(stub.reply_tokens()),
        "total_tokens": PROMPT_TOKENS_BASE + 4 + len(stub.reply_tokens()),
    }
    assert reply["usage"] == expected
    stored = await client.get(f"/api/v1/messages/{reply['id']}", headers=user)
    assert stored.json()["usage"] == expected


async def test_a_provider_error_is_502_and_keeps_only_the_users_message(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    conversation = (await client.post("/api/v1/conversations", json={}, headers=user)).json()
    path = f"/api/v1/conversations/{conversation['id']}/messages"
    stub.fail_status = 500
    assert_envelope(
        await client.post(path, json={"content": "Hello?"}, headers=user), 502, "PROVIDER_ERROR"
    )
    streamed = await stream_post(client, path, {"content": "Again?", "stream": True}, user)
    assert streamed.status == 502
    assert streamed.last.data["error"]["code"] == "PROVIDER_ERROR"
    messages = (await client.get(path, headers=user)).json()["data"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "Hello?"), ("user", "Again?")]
    assert (await client.get("/api/v1/chat/usage", headers=user)).json()["total_tokens"] == 0


async def test_a_failure_before_the_first_token_is_retried(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    stub.requests.clear()
    stub.fail_status, stub.fail_times = 503, 1
    response = await client.post("/api/v1/chat", json={"message": "Retry me"}, headers=user)
    assert response.status_code == 201, response.text
    assert len(stub.requests) == 2


async def test_a_provider_that_never_answers_is_504(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    stub.hang = True
    response = await client.post("/api/v1/chat", json={"message": "Anyone there?"}, headers=user)
    assert_envelope(response, 504, "UPSTREAM_TIMEOUT")
    (conversation,) = (await client.get("/api/v1/conversations", headers=user)).json()["data"]
    messages = await client.get(
        f"/api/v1/conversations/{conversation['id']}/messages", headers=user
    )
    assert [m["role"] for m in messages.json()["data"]] == ["user"]


async def test_a_stream_broken_by_the_provider_ends_with_an_error_and_is_not_saved_as_complete(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    stub.cut_after = 5
    streamed = await stream_post(client, "/api/v1/chat", {"message": "Go", "stream": True}, user)
    assert streamed.status == 200
    assert streamed.last.kind == "error"
    assert streamed.last.data["code"] == "PROVIDER_ERROR"
    reply = (
        await client.get(f"/api/v1/messages/{streamed.deltas[0].data['id']}", headers=user)
    ).json()
    assert (reply["status"], reply["finish_reason"]) == ("failed", "error")
    assert reply["content"] == streamed.text == stub.reply_text(5)


async def test_stopping_mid_stream_saves_the_partial_answer_and_counts_its_tokens(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    stub.tokens, stub.interval = SLOW_TOKENS, SLOW_INTERVAL
    body = {"message": "Talk for a while", "stream": True}
    async with client.stream("POST", "/api/v1/chat", json=body, headers=user) as response:
        stream = SseStream(response.status_code, dict(response.headers))
        await read_sse(response, stream, stop_after_deltas=3)
        reply_id = stream.deltas[0].data["id"]
        stopped = await client.post(f"/api/v1/messages/{reply_id}/stop", headers=user)
        await read_sse(response, stream)
    assert stopped.status_code == 200, stopped.text
    saved = stopped.json()
    assert (saved["status"], saved["finish_reason"]) == ("stopped", "stopped")
    assert stream.last.kind == "chat_response"
    assert stream.last.data["finish_reason"] == "stopped"
    assert saved["content"] == stream.text == stream.last.data["message"]
    produced = saved["content"].count(" ")
    assert 3 <= produced < SLOW_TOKENS
    assert 0 < saved["usage"]["completion_tokens"] < SLOW_TOKENS * 2
    # Stopping a reply that has ended changes nothing.
    again = await client.post(f"/api/v1/messages/{reply_id}/stop", headers=user)
    assert again.json()["content"] == saved["content"]


async def test_stop_on_the_websocket(
    provider_stack: Stack, client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    stub.tokens, stub.interval = SLOW_TOKENS, SLOW_INTERVAL
    token = user["Authorization"].split(" ", 1)[1]
    async with connect(websocket_url(provider_stack, f"token={token}")) as socket:
        await socket.send(json.dumps({"type": "chat", "data": {"message": "Long one"}}))
        for _ in range(3):
            assert (await next_frame(socket))["type"] == "chat_delta"
        await socket.send(json.dumps({"type": "stop"}))
        frames = await frames_until_end(socket)
    final = frames[-1]
    assert final["type"] == "chat_response"
    assert final["data"]["finish_reason"] == "stopped"
    assert final["data"]["message"].count(" ") < SLOW_TOKENS


async def test_a_client_that_disconnects_finds_the_whole_answer_saved(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    stub.tokens, stub.interval = 60, 0.02
    stream = await stream_post(
        client,
        "/api/v1/chat",
        {"message": "I will leave", "stream": True},
        user,
        stop_after_deltas=2,
    )
    reply_id = stream.deltas[0].data["id"]
    received = int(stream.deltas[-1].id or 0)

    async def saved() -> bool:
        reply = (await client.get(f"/api/v1/messages/{reply_id}", headers=user)).json()
        return bool(reply["status"] == "completed")

    await eventually(saved, within_seconds=20)
    reply = (await client.get(f"/api/v1/messages/{reply_id}", headers=user)).json()
    assert reply["content"] == stub.reply_text()
    assert reply["finish_reason"] == "stop"
    resumed = await stream_get(
        client, f"/api/v1/messages/{reply_id}/stream", {**user, "Last-Event-ID": str(received)}
    )
    assert stream.text + resumed.text == stub.reply_text()
    assert resumed.last.kind == "chat_response"


async def test_resuming_a_running_reply_follows_it_to_the_end(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    stub.tokens, stub.interval = 80, 0.02
    first = await stream_post(
        client, "/api/v1/chat", {"message": "Follow me", "stream": True}, user, stop_after_deltas=2
    )
    reply_id = first.deltas[0].data["id"]
    resumed = await stream_get(
        client,
        f"/api/v1/messages/{reply_id}/stream",
        {**user, "Last-Event-ID": str(first.deltas[-1].id)},
    )
    assert first.text + resumed.text == stub.reply_text()
    assert resumed.last.data["finish_reason"] == "stop"


async def test_the_daily_quota_refuses_before_calling_the_provider(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user = await chat_user(client)
    spent = 0
    while spent < DAILY_LIMIT:
        response = await client.post("/api/v1/chat", json={"message": "Spend"}, headers=user)
        assert response.status_code == 201, response.text
        spent += response.json()["usage"]["total_tokens"]
    stub.requests.clear()
    refused = await client.post("/api/v1/chat", json={"message": "One more"}, headers=user)
    body = assert_envelope(refused, 429, "QUOTA_EXCEEDED")
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert body["error"]["details"]["limit"] == DAILY_LIMIT
    assert stub.requests == []
    usage = (await client.get("/api/v1/chat/usage", headers=user)).json()
    assert (usage["total_tokens"], usage["limit"], usage["remaining"]) == (spent, DAILY_LIMIT, 0)


async def test_concurrent_generations_per_user_are_limited(
    client: httpx.AsyncClient, stub: OpenAIStub
) -> None:
    user, other = await chat_user(client), await chat_user(client)
    stub.tokens, stub.interval = SLOW_TOKENS, SLOW_INTERVAL
    body = {"message": "Busy", "stream": True}
    running = [
        await stream_post(client, "/api/v1/chat", body, user, stop_after_deltas=1) for _ in range(2)
    ]
    assert_envelope(
        await client.post("/api/v1/chat", json={"message": "Third"}, headers=user),
        429,
        "RATE_LIMIT_EXCEEDED",
    )
    # Another user is not affected.
    other_stream = await stream_post(client, "/api/v1/chat", body, other, stop_after_deltas=1)
    assert other_stream.deltas
    for stream in [*running, other_stream]:
        reply_id = stream.deltas[0].data["id"]
        headers = user if stream in running else other
        assert (
            await client.post(f"/api/v1/messages/{reply_id}/stop", headers=headers)
        ).status_code == 200
    # With the slots given back, the user can go on.
    stub.tokens, stub.interval = 3, 0.0
    assert (
        await client.post("/api/v1/chat", json={"message": "Now"}, headers=user)
    ).status_code == 201
    await asyncio.sleep(0)
