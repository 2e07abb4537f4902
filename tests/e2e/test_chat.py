"""Chat through the gateway, in both modes, with the offline `lyceum-dev` model: what a new
user does with `make run` and no key."""

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.chat.models import Conversation
from shared.testing import Stack, eventually
from tests.e2e.chat_helpers import (
    chat_user,
    frames_until_end,
    next_frame,
    stream_get,
    stream_post,
    websocket_url,
)
from tests.e2e.helpers import admin_tokens, assert_envelope, bearer

MESSAGE_FIELDS = {
    "id",
    "role",
    "content",
    "parent_id",
    "model",
    "usage",
    "finish_reason",
    "prompt",
    "citations",
    "created_at",
}
CHAT_FIELDS = {"id", "message", "model", "usage", "conversation_id", "created_at", "citations"}


def assert_usage(usage: dict[str, int]) -> None:
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_the_offline_model_is_listed_as_the_default(stack: Stack) -> None:
    async with stack.client() as client:
        user = await chat_user(client)
        response = await client.get("/api/v1/models", headers=user)
        assert response.status_code == 200
        (model,) = response.json()["data"]
        assert model["id"] == "lyceum-dev"
        assert model["default"] is True
        assert model["context_window"] > 0
        assert model["owned_by"]
        assert "development model" in model["description"]
        assert_envelope(await client.get("/api/v1/models"), 401, "AUTHENTICATION_REQUIRED")


async def test_post_chat_answers_and_the_history_and_usage_show_it(stack: Stack) -> None:
    async with stack.client() as client:
        user = await chat_user(client)
        response = await client.post(
            "/api/v1/chat", json={"message": "What is a monad?"}, headers=user
        )
        assert response.status_code == 201, response.text
        answer = response.json()
        assert set(answer) >= CHAT_FIELDS
        assert answer["model"] == "lyceum-dev"
        assert "What is a monad?" in answer["message"]
        assert answer["finish_reason"] == "stop"
        assert answer["citations"] == []
        assert_usage(answer["usage"])

        again = await client.post(
            "/api/v1/chat",
            json={"message": "Tell me more", "conversation_id": answer["conversation_id"]},
            headers=user,
        )
        assert again.status_code == 201
        assert again.json()["conversation_id"] == answer["conversation_id"]
        assert "2 earlier messages" in again.json()["message"]

        history = await client.get("/api/v1/chat/history?limit=50&offset=0", headers=user)
        assert history.status_code == 200
        page = history.json()
        assert (page["total"], page["limit"], page["offset"]) == (2, 50, 0)
        newest, oldest = page["messages"]
        assert set(newest) == {"id", "message", "response", "model", "citations", "created_at"}
        assert newest["citations"] == []
        assert (newest["message"], newest["response"]) == ("Tell me more", again.json()["message"])
        assert (oldest["id"], oldest["message"]) == (answer["id"], "What is a monad?")

        usage = (await client.get("/api/v1/chat/usage", headers=user)).json()
        spent = answer["usage"]["total_tokens"] + again.json()["usage"]["total_tokens"]
        assert usage["total_tokens"] == usage["tokens_used"] == spent
        assert usage["limit"] == 0
        assert usage["remaining"] is None


async def test_conversations_belong_to_their_user(stack: Stack) -> None:
    async with stack.client() as client:
        owner, stranger = await chat_user(client), await chat_user(client)
        created = await client.post(
            "/api/v1/conversations", json={"title": "Algebra revision"}, headers=owner
        )
        assert created.status_code == 201, created.text
        conversation = created.json()
        assert created.headers["location"] == f"/api/v1/conversations/{conversation['id']}"
        assert (conversation["model"], conversation["prompt"]) == ("lyceum-dev", None)
        assert (conversation["use_documents"], conversation["document_ids"]) == (False, None)
        path = f"/api/v1/conversations/{conversation['id']}"
        posted = await client.post(f"{path}/messages", json={"content": "Hi"}, headers=owner)
        assert posted.status_code == 201

        fetched = (await client.get(path, headers=owner)).json()
        assert fetched["message_count"] == 2
        assert fetched["usage"] == posted.json()["assistant_message"]["usage"]
        for method, url, body in [
            ("GET", path, None),
            ("PATCH", path, {"title": "Mine now"}),
            ("PUT", path, {"title": "Mine now", "model": "lyceum-dev"}),
            ("DELETE", path, None),
            ("GET", f"{path}/messages", None),
            ("POST", f"{path}/messages", {"content": "hello"}),
            ("GET", f"/api/v1/messages/{posted.json()['user_message']['id']}", None),
        ]:
            response = await client.request(method, url, json=body, headers=stranger)
            assert_envelope(response, 404, "RESOURCE_NOT_FOUND")
        listed = (await client.get("/api/v1/conversations", headers=stranger)).json()
        assert listed["pagination"]["total"] == 0


async def test_conversation_list_update_and_delete(stack: Stack) -> None:
    async with stack.client() as client:
        user = await chat_user(client)
        ids = []
        for title in ("Geometry", "Organic chemistry", "Geology"):
            response = await client.post(
                "/api/v1/conversations", json={"title": title}, headers=user
            )
            ids.append(response.json()["id"])
        # Activity in the first one makes it the newest.
        await client.post(
            f"/api/v1/conversations/{ids[0]}/messages", json={"content": "x"}, headers=user
        )
        listed = (await client.get("/api/v1/conversations?per_page=2", headers=user)).json()
        assert listed["pagination"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2}
        assert [row["id"] for row in listed["data"]] == [ids[0], ids[2]]
        found = (await client.get("/api/v1/conversations?search=geo", headers=user)).json()
        assert {row["title"] for row in found["data"]} == {"Geometry", "Geology"}

        path = f"/api/v1/conversations/{ids[1]}"
        patched = await client.patch(path, json={"title": "Chemistry"}, headers=user)
        assert (patched.status_code, patched.json()["title"]) == (200, "Chemistry")
        assert_envelope(
            await client.patch(path, json={"model": "gpt-unknown"}, headers=user),
            400,
            "VALIDATION_ERROR",
        )
        assert_envelope(
            await client.patch(path, json={"prompt": "no-such-prompt"}, headers=user),
            404,
            "RESOURCE_NOT_FOUND",
        )
        assert_envelope(
            await client.put(path, json={"title": "No model"}, headers=user),
            400,
            "VALIDATION_ERROR",
        )
        put = await client.put(path, json={"title": "Chem", "model": "lyceum-dev"}, headers=user)
        assert (put.status_code, put.json()["title"]) == (200, "Chem")

        assert (await client.delete(path, headers=user)).status_code == 204
        assert_envelope(await client.get(path, headers=user), 404, "RESOURCE_NOT_FOUND")
        assert_envelope(
            await client.post("/api/v1/conversations", json={"model": "nope"}, headers=user),
            400,
            "VALIDATION_ERROR",
        )


async def test_messages_branch_when_a_reply_is_regenerated(stack: Stack) -> None:
    async with stack.client() as client:
        user = await chat_user(client)
        conversation = (await client.post("/api/v1/conversations", json={}, headers=user)).json()
        path = f"/api/v1/conversations/{conversation['id']}/messages"
        first = await client.post(path, json={"content": "First question"}, headers=user)
        assert first.status_code == 201, first.text
        exchange = first.json()
        question, reply = exchange["user_message"], exchange["assistant_message"]
        assert set(question) >= MESSAGE_FIELDS
        assert set(reply) >= MESSAGE_FIELDS
        assert (question["role"], reply["role"]) == ("user", "assistant")
        assert reply["parent_id"] == question["id"]
        assert reply["finish_reason"] == "stop"
        assert (question["citations"], reply["citations"]) == ([], [])
        assert_usage(reply["usage"])
        second = (await client.post(path, json={"content": "Second"}, headers=user)).json()
        assert second["user_message"]["parent_id"] == reply["id"]

        listed = (await client.get(path, headers=user)).json()
        assert [m["role"] for m in listed["data"]] == ["user", "assistant", "user", "assistant"]
        titled = await client.get(f"/api/v1/conversations/{conversation['id']}", headers=user)
        assert titled.json()["title"] == "First question"

        old_reply = second["assistant_message"]
        regenerated = await client.post(
            f"/api/v1/messages/{old_reply['id']}/regenerate", headers=user
        )
        assert regenerated.status_code == 201, regenerated.text
        sibling = regenerated.json()["assistant_message"]
        assert sibling["id"] != old_reply["id"]
        assert sibling["parent_id"] == old_reply["parent_id"]
        branch = [m["id"] for m in (await client.get(path, headers=user)).json()["data"]]
        assert branch[-1] == sibling["id"]
        assert old_reply["id"] not in branch
        kept = await client.get(f"/api/v1/messages/{old_reply['id']}", headers=user)
        assert kept.status_code == 200

        edited = await client.put(
            f"/api/v1/messages/{question['id']}",
            json={"content": "First question, edited"},
            headers=user,
        )
        assert (edited.status_code, edited.json()["content"]) == (200, "First question, edited")
        assert_envelope(
            await client.put(
                f"/api/v1/messages/{reply['id']}", json={"content": "x"}, headers=user
            ),
            409,
            "CONFLICT",
        )
        second_question = second["user_message"]["id"]
        assert (
            await client.delete(f"/api/v1/messages/{second_question}", headers=user)
        ).status_code == 204
        remaining = (await client.get(path, headers=user)).json()["data"]
        assert [m["id"] for m in remaining] == [question["id"], reply["id"]]
        assert_envelope(
            await client.get(f"/api/v1/messages/{sibling['id']}", headers=user),
            404,
            "RESOURCE_NOT_FOUND",
        )


@pytest.mark.parametrize(
    "body",
    [
        {"message": ""},
        {"message": "   "},
        {"message": "x" * 32_001},
        {"message": "hi", "temperature": 2.5},
        {"message": "hi", "max_tokens": 0},
        {"message": "hi", "model": "no-such-model"},
        {"message": "hi", "conversation_id": "not-a-uuid"},
        {"message": "hi", "use_documents": "yes"},
        {"message": "hi", "use_documents": True, "document_ids": []},
        {"message": "hi", "use_documents": True, "document_ids": ["not-a-uuid"]},
    ],
)
async def test_bad_chat_input_is_400_and_stores_nothing(stack: Stack, body: dict[str, Any]) -> None:
    async with stack.client() as client:
        user = await chat_user(client)
        assert_envelope(
            await client.post("/api/v1/chat", json=body, headers=user), 400, "VALIDATION_ERROR"
        )
        assert (await client.get("/api/v1/conversations", headers=user)).json()["data"] == []


async def test_replies_stream_as_server_sent_events_and_can_be_replayed(stack: Stack) -> None:
    async with stack.client() as client:
        user = await chat_user(client)
        stream = await stream_post(
            client, "/api/v1/chat", {"message": "Stream this", "stream": True}, user
        )
        assert stream.status == 200, stream.events
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["x-accel-buffering"] == "no"
        assert len(stream.deltas) > 5
        reply_id = stream.deltas[0].data["id"]
        assert all(event.data["id"] == reply_id for event in stream.deltas)
        assert stream.last.kind == "chat_response"
        saved = stream.last.data
        assert CHAT_FIELDS | {"finish_reason"} <= set(saved)
        assert saved["citations"] == []
        assert (saved["id"], saved["message"], saved["finish_reason"]) == (
            reply_id,
            stream.text,
            "stop",
        )
        offsets = [int(event.id or 0) for event in stream.deltas]
        assert offsets == sorted(offsets)
        assert offsets[-1] == len(stream.text)

        # A client that had received the first three pieces resumes after them.
        resumed_at = stream.deltas[2].id
        resumed = await stream_get(
            client,
            f"/api/v1/messages/{reply_id}/stream",
            {**user, "Last-Event-ID": str(resumed_at)},
        )
        assert resumed.last.kind == "chat_response"
        assert stream.text[: int(resumed_at or 0)] + resumed.text == stream.text

        # The messages API streams too, asked by the Accept header.
        conversation_id = saved["conversation_id"]
        by_accept = await stream_post(
            client,
            f"/api/v1/conversations/{conversation_id}/messages",
            {"content": "And once more"},
            {**user, "Accept": "text/event-stream"},
        )
        assert by_accept.last.kind == "chat_response"
        assert by_accept.last.data["message"] == by_accept.text


async def test_the_websocket_streams_replies_and_keeps_the_socket_on_bad_input(
    stack: Stack,
) -> None:
    async with stack.client() as client:
        user = await chat_user(client)
    token = user["Authorization"].split(" ", 1)[1]
    async with connect(websocket_url(stack, f"token={token}")) as socket:
        await socket.send(json.dumps({"type": "ping"}))
        assert await next_frame(socket) == {"type": "pong"}
        await socket.send("not json")
        bad = await next_frame(socket)
        assert (bad["type"], bad["data"]["code"]) == ("error", "VALIDATION_ERROR")
        await socket.send(json.dumps({"type": "chat", "data": {"message": ""}}))
        assert (await next_frame(socket))["data"]["code"] == "VALIDATION_ERROR"
        await socket.send(json.dumps({"type": "chat", "data": {"message": "Hello socket"}}))
        frames = await frames_until_end(socket)
        deltas = [frame for frame in frames if frame["type"] == "chat_delta"]
        assert len(deltas) > 5
        final = frames[-1]
        assert final["type"] == "chat_response"
        assert final["data"]["model"] == "lyceum-dev"
        assert final["data"]["message"] == "".join(frame["data"]["delta"] for frame in deltas)
        assert final["data"]["id"] == deltas[0]["data"]["id"]
        assert final["data"]["citations"] == []
        # The same socket goes on, in the conversation it started.
        conversation_id = final["data"]["conversation_id"]
        await socket.send(
            json.dumps(
                {"type": "chat", "data": {"message": "Again", "conversation_id": conversation_id}}
            )
        )
        again = await frames_until_end(socket)
        assert again[-1]["data"]["conversation_id"] == conversation_id

    # The token as a subprotocol keeps it out of the URL; it is never echoed back.
    async with connect(websocket_url(stack), subprotocols=["bearer", token]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "bearer"
        await socket.send(json.dumps({"type": "chat", "data": {"message": "Via subprotocol"}}))
        assert (await frames_until_end(socket))[-1]["type"] == "chat_response"

    with pytest.raises(InvalidStatus) as refused:
        async with connect(websocket_url(stack)):
            pass
    assert refused.value.response.status_code == 401


async def test_prompts_are_versioned_and_replies_record_the_version_they_used(stack: Stack) -> None:
    name = f"tutor-{uuid.uuid4().hex[:8]}"
    async with stack.client() as client:
        admin = bearer(await admin_tokens(client))
        student = await chat_user(client)
        body = {
            "name": name,
            "content": "You are a patient tutor, version one.",
            "description": "Tutor",
        }
        assert_envelope(
            await client.post("/api/v1/prompts", json=body, headers=student),
            403,
            "PERMISSION_DENIED",
        )
        created = await client.post("/api/v1/prompts", json=body, headers=admin)
        assert created.status_code == 201, created.text
        assert (created.json()["version"], created.json()["labels"]) == (1, ["production"])
        assert_envelope(
            await client.post("/api/v1/prompts", json=body, headers=admin), 409, "CONFLICT"
        )
        v2 = await client.post(
            f"/api/v1/prompts/{name}/versions",
            json={"content": "You are a strict examiner, version two."},
            headers=admin,
        )
        assert (v2.status_code, v2.json()["version"], v2.json()["labels"]) == (201, 2, [])
        assert_envelope(
            await client.post(
                f"/api/v1/prompts/{name}/versions", json={"content": "x"}, headers=student
            ),
            403,
            "PERMISSION_DENIED",
        )

        conversation = await client.post(
            "/api/v1/conversations", json={"prompt": name}, headers=student
        )
        assert conversation.status_code == 201, conversation.text
        path = f"/api/v1/conversations/{conversation.json()['id']}/messages"
        first = (await client.post(path, json={"content": "Quiz me"}, headers=student)).json()
        assert first["assistant_message"]["prompt"] == {"name": name, "version": 1}
        assert "version one" in first["assistant_message"]["content"]

        moved = await client.put(
            f"/api/v1/prompts/{name}/labels/production", json={"version": 2}, headers=admin
        )
        assert moved.status_code == 200, moved.text
        assert_envelope(
            await client.put(
                f"/api/v1/prompts/{name}/labels/production", json={"version": 1}, headers=student
            ),
            403,
            "PERMISSION_DENIED",
        )
        assert_envelope(
            await client.put(
                f"/api/v1/prompts/{name}/labels/production", json={"version": 9}, headers=admin
            ),
            404,
            "RESOURCE_NOT_FOUND",
        )
        second = (await client.post(path, json={"content": "Again"}, headers=student)).json()
        assert second["assistant_message"]["prompt"] == {"name": name, "version": 2}
        assert "version two" in second["assistant_message"]["content"]

        current = (await client.get(f"/api/v1/prompts/{name}", headers=student)).json()
        assert (current["version"], current["content"]) == (
            2,
            "You are a strict examiner, version two.",
        )
        # Version 1 has no label now: published no more, except to admins.
        assert_envelope(
            await client.get(f"/api/v1/prompts/{name}?version=1", headers=student),
            404,
            "RESOURCE_NOT_FOUND",
        )
        old = await client.get(f"/api/v1/prompts/{name}?version=1", headers=admin)
        assert (old.status_code, old.json()["version"]) == (200, 1)
        by_label = await client.get(f"/api/v1/prompts/{name}?label=production", headers=student)
        assert by_label.json()["version"] == 2
        versions = (await client.get(f"/api/v1/prompts/{name}/versions", headers=admin)).json()
        assert [row["version"] for row in versions["data"]] == [2, 1]
        listed = (await client.get(f"/api/v1/prompts?search={name}", headers=student)).json()
        assert [(row["name"], row["labels"]) for row in listed["data"]] == [
            (name, {"production": 2})
        ]


async def test_use_documents_is_asked_on_the_users_behalf(stack: Stack) -> None:
    """A user without documents: the search finds nothing and the reply says so, with no
    citation. Until the documents service is registered, nothing answers at its address
    and the message is refused (502, relayed by the gateway) rather than answered as if."""
    async with stack.client() as client:
        user = await chat_user(client)
        document_id = str(uuid.uuid4())
        created = await client.post(
            "/api/v1/conversations",
            json={"use_documents": True, "document_ids": [document_id]},
            headers=user,
        )
        assert created.status_code == 201, created.text
        conversation = created.json()
        assert (conversation["use_documents"], conversation["document_ids"]) == (
            True,
            [document_id],
        )
        path = f"/api/v1/conversations/{conversation['id']}"
        patched = await client.patch(path, json={"document_ids": None}, headers=user)
        assert (patched.json()["use_documents"], patched.json()["document_ids"]) == (True, None)

        asked = await client.post(
            "/api/v1/chat",
            json={"message": "What do my notes say about monads?", "use_documents": True},
            headers=user,
        )
        assert asked.status_code == 201, asked.text
        assert asked.json()["citations"] == []
        assert "No passage of your documents matched" in asked.json()["message"]

        # Said not to, a message in a conversation that uses them does not search.
        plain = await client.post(
            f"{path}/messages", json={"content": "Hello", "use_documents": False}, headers=user
        )
        assert plain.status_code == 201, plain.text
        assert plain.json()["assistant_message"]["citations"] == []


async def test_a_deleted_user_loses_their_conversations(stack: Stack) -> None:
    async with stack.client() as client:
        admin = bearer(await admin_tokens(client))
        user = await chat_user(client)
        answer = (
            await client.post("/api/v1/chat", json={"message": "Remember me"}, headers=user)
        ).json()
        me = (await client.get("/api/v1/auth/me", headers=user)).json()
        response = await client.delete(f"/api/v1/users/{me['id']}", headers=admin)
        assert response.status_code == 204, response.text

    engine = create_async_engine(stack.database_url("chat"))
    conversation_id = uuid.UUID(answer["conversation_id"])

    async def conversation_gone() -> bool:
        async with engine.connect() as connection:
            query = (
                select(func.count())
                .select_from(Conversation)
                .where(Conversation.id == conversation_id)
            )
            return (await connection.execute(query)).scalar_one() == 0

    try:
        await eventually(conversation_gone, within_seconds=20)
    finally:
        await engine.dispose()
