"""Messages of a conversation: the current branch, editing, deleting."""

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.chat.models import Conversation, Message
from services.chat.service.conversations import get_owned
from shared.db import utcnow
from shared.errors import Conflict, NotFound
from shared.pagination import PageParams, Pagination


async def branch(
    session: AsyncSession, conversation_id: uuid.UUID, leaf_id: uuid.UUID | None
) -> list[Message]:
    """The messages from the first one down to `leaf_id`, oldest first."""
    if leaf_id is None:
        return []
    rows = await session.scalars(select(Message).where(Message.conversation_id == conversation_id))
    by_id = {row.id: row for row in rows}
    path: list[Message] = []
    current = by_id.get(leaf_id)
    while current is not None:
        path.append(current)
        current = by_id.get(current.parent_id) if current.parent_id else None
    path.reverse()
    return path


async def list_branch(
    session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID, page: PageParams
) -> tuple[list[Message], Pagination]:
    conversation = await get_owned(session, user_id, conversation_id)
    path = await branch(session, conversation.id, conversation.current_message_id)
    total = len(path)
    rows = path[page.offset : page.offset + page.per_page]
    pages = -(-total // page.per_page) if total else 0
    return rows, Pagination(page=page.page, per_page=page.per_page, total=total, pages=pages)


async def get_owned_message(
    session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID
) -> Message:
    message = await session.scalar(
        select(Message).where(Message.id == message_id, Message.user_id == user_id)
    )
    if message is None:
        raise NotFound("Message not found")
    return message


async def edit_message(
    session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID, content: str
) -> Message:
    message = await get_owned_message(session, user_id, message_id)
    if message.role != "user":
        raise Conflict("Only the user's own messages can be edited: this is a reply")
    if message.content != content:
        message.content = content
        message.updated_at = utcnow()
        await session.flush()
    return message


async def delete_message(session: AsyncSession, user_id: uuid.UUID, message_id: uuid.UUID) -> None:
    """Deletes the message and every reply below it; the branch moves up to its parent."""
    message = await get_owned_message(session, user_id, message_id)
    rows = (
        await session.scalars(
            select(Message).where(Message.conversation_id == message.conversation_id)
        )
    ).all()
    children: dict[uuid.UUID | None, list[Message]] = {}
    for row in rows:
        children.setdefault(row.parent_id, []).append(row)
    doomed: list[Message] = []
    pending = [message]
    while pending:
        current = pending.pop()
        doomed.append(current)
        pending.extend(children.get(current.id, []))
    if any(row.status == "generating" for row in doomed):
        raise Conflict("A reply is being generated here: stop it first")
    conversation = await session.get(Conversation, message.conversation_id)
    assert conversation is not None
    if conversation.current_message_id in {row.id for row in doomed}:
        conversation.current_message_id = message.parent_id
    for row in reversed(doomed):
        await session.delete(row)
    await session.flush()


async def history(
    session: AsyncSession, user_id: uuid.UUID, limit: int, offset: int
) -> dict[str, Any]:
    """The simple API's history: each finished reply with the message it answers, newest
    first, across the user's conversations."""
    question = Message.__table__.alias("question")
    base = (
        select(Message, question.c.content)
        .join(question, question.c.id == Message.parent_id)
        .where(
            Message.user_id == user_id,
            Message.role == "assistant",
            Message.status.in_(("completed", "stopped")),
        )
    )
    total = int(await session.scalar(select(func.count()).select_from(base.subquery())) or 0)
    rows = await session.execute(
        base.order_by(Message.created_at.desc(), Message.id).limit(limit).offset(offset)
    )
    entries = [
        {
            "id": reply.id,
            "message": asked,
            "response": reply.content,
            "model": reply.model,
            "citations": reply.citations or [],
            "created_at": reply.created_at,
        }
        for reply, asked in rows
    ]
    return {"messages": entries, "total": total, "limit": limit, "offset": offset}
