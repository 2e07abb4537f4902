"""Chat's events on the real RabbitMQ, as another team's queue receives them, each checked
against its JSON Schema in docs/events/schemas."""

import json

from aio_pika.abc import AbstractChannel

from shared.testing import Stack
from tests.e2e.bus_helpers import events_naming, other_team_queue
from tests.e2e.chat_helpers import chat_user
from tests.e2e.test_courses_events import assert_matches_schema


async def test_conversations_and_replies_are_announced_without_their_text(
    full_stack: Stack, amqp_channel: AbstractChannel
) -> None:
    queue = await other_team_queue(amqp_channel, full_stack, "conversation.*")
    await queue.bind(full_stack.exchange, "message.created")
    async with full_stack.client() as client:
        user = await chat_user(client)
        answer = await client.post("/api/v1/chat", json={"message": "Secret plans"}, headers=user)
        assert answer.status_code == 201, answer.text
        reply = answer.json()
        conversation_id = reply["conversation_id"]
        deleted = await client.delete(f"/api/v1/conversations/{conversation_id}", headers=user)
        assert deleted.status_code == 204

    events = await events_naming(
        queue, conversation_id, "conversation.deleted", ("conversation_id", "id")
    )
    assert [event["type"] for event in events] == [
        "conversation.created",
        "message.created",
        "conversation.deleted",
    ]
    for event in events:
        assert_matches_schema(event)
        assert event["subject"] == f"conversations/{conversation_id}"
        assert event["source"] == "lyceum/chat"
        assert "Secret plans" not in json.dumps(event)
    created = events[1]["data"]
    assert created["id"] == reply["id"]
    assert created["usage"] == reply["usage"]
    assert (created["model"], created["finish_reason"]) == ("lyceum-dev", "stop")
