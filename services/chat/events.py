"""What chat publishes (`conversation.created`, `conversation.deleted`, `message.created`)
and what it learns (`user.deleted`: the user's conversations and usage go)."""

import uuid
from typing import Any

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from services.chat.models import Conversation, DailyUsage, Message, OutboxEvent
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import DomainHandler
from shared.events.outbox import Outbox
from shared.service import Collaborators

outbox = Outbox(OutboxEvent, source="lyceum/chat")


def _subject(conversation_id: uuid.UUID) -> str:
    return f"conversations/{conversation_id}"


def record_conversation_created(session: AsyncSession, conversation: Conversation) -> None:
    data = {
        "id": str(conversation.id),
        "user_id": str(conversation.user_id),
        "title": conversation.title,
        "model": conversation.model,
        "prompt": conversation.prompt,
        "created_at": conversation.created_at.isoformat().replace("+00:00", "Z"),
    }
    outbox.add(session, "conversation.created", _subject(conversation.id), data)


def record_conversation_deleted(session: AsyncSession, conversation: Conversation) -> None:
    data = {"id": str(conversation.id), "user_id": str(conversation.user_id)}
    outbox.add(session, "conversation.deleted", _subject(conversation.id), data)


def record_message_created(session: AsyncSession, reply: Message) -> None:
    """A finished reply: who, which model, what it cost and which prompt; never the text."""
    prompt = None
    if reply.prompt_name is not None:
        prompt = {"name": reply.prompt_name, "version": reply.prompt_version}
    data: dict[str, Any] = {
        "id": str(reply.id),
        "conversation_id": str(reply.conversation_id),
        "user_id": str(reply.user_id),
        "parent_id": str(reply.parent_id) if reply.parent_id else None,
        "model": reply.model,
        "finish_reason": reply.finish_reason,
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.total_tokens,
        },
        "prompt": prompt,
        "created_at": reply.created_at.isoformat().replace("+00:00", "Z"),
    }
    outbox.add(session, "message.created", _subject(reply.conversation_id), data)


async def on_user_deleted(
    session: AsyncSession, event: CloudEvent, _collaborators: Collaborators[Any]
) -> None:
    user_id = uuid.UUID(event.data["id"])
    await session.execute(delete(Conversation).where(Conversation.user_id == user_id))
    await session.execute(delete(DailyUsage).where(DailyUsage.user_id == user_id))
    # Messages go with their conversation (ON DELETE CASCADE); any left are removed too.
    await session.execute(delete(Message).where(Message.user_id == user_id))


handlers: dict[str, DomainHandler[Collaborators[Any]]] = {"user.deleted": on_user_deleted}
