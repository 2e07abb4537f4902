"""How messages look to clients: as messages, and as the simple API's chat responses (also
the `chat_response` event of a stream)."""

from typing import Any

from services.chat.models import Message
from services.chat.schemas import usage_of


def prompt_of(message: Message) -> dict[str, Any] | None:
    if message.prompt_name is None:
        return None
    return {"name": message.prompt_name, "version": message.prompt_version}


def message_view(message: Message) -> dict[str, Any]:
    # A user's message costs nothing by itself: it is counted in its reply's prompt.
    usage = usage_of(message.prompt_tokens, message.completion_tokens)
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "role": message.role,
        "content": message.content,
        "parent_id": message.parent_id,
        "model": message.model,
        "status": message.status,
        "usage": usage,
        "finish_reason": message.finish_reason,
        "prompt": prompt_of(message),
        "citations": message.citations or [],
        "created_at": message.created_at,
        "updated_at": message.updated_at,
    }


def chat_response_view(reply: Message) -> dict[str, Any]:
    return {
        "id": reply.id,
        "message": reply.content,
        "model": reply.model,
        "usage": usage_of(reply.prompt_tokens, reply.completion_tokens),
        "conversation_id": reply.conversation_id,
        "created_at": reply.created_at,
        "finish_reason": reply.finish_reason,
        "prompt": prompt_of(reply),
        "citations": reply.citations or [],
    }
