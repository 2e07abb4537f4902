"""A user's conversations; someone else's is as good as missing (404)."""

import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.chat.events import record_conversation_created, record_conversation_deleted
from services.chat.models import Conversation, Message
from services.chat.providers.catalogue import ModelCatalogue
from services.chat.schemas import ConversationSort, usage_of
from services.chat.service import prompts
from shared.db import utcnow
from shared.errors import NotFound
from shared.pagination import PageParams, Pagination, SortOrder, order_by, paginate
from shared.updates import assign_changed, requested_values

DEFAULT_TITLE = "New conversation"
AUTOMATIC_TITLE_CHARACTERS = 60
SORTABLE = {
    "last_activity_at": Conversation.last_activity_at,
    "created_at": Conversation.created_at,
    "title": Conversation.title,
}


async def get_owned(
    session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID, *, lock: bool = False
) -> Conversation:
    query = select(Conversation).where(
        Conversation.id == conversation_id, Conversation.user_id == user_id
    )
    if lock:
        query = query.with_for_update()
    conversation = await session.scalar(query)
    if conversation is None:
        raise NotFound("Conversation not found")
    return conversation


async def create_conversation(
    session: AsyncSession,
    catalogue: ModelCatalogue,
    user_id: uuid.UUID,
    *,
    title: str | None,
    model: str | None,
    prompt: str | None,
    use_documents: bool = False,
    document_ids: list[uuid.UUID] | None = None,
) -> Conversation:
    conversation = await new_conversation(
        session,
        catalogue,
        user_id,
        title=title,
        model=model,
        prompt=prompt,
        use_documents=use_documents,
        document_ids=document_ids,
    )
    add_conversation(session, conversation)
    await session.flush()
    return conversation


async def new_conversation(
    session: AsyncSession,
    catalogue: ModelCatalogue,
    user_id: uuid.UUID,
    *,
    title: str | None,
    model: str | None,
    prompt: str | None,
    use_documents: bool = False,
    document_ids: list[uuid.UUID] | None = None,
) -> Conversation:
    """A checked conversation, not yet added to the session."""
    resolved = await catalogue.resolve(model)
    if prompt is not None:
        await prompts.require_prompt(session, prompt)
    now = utcnow()
    return Conversation(
        id=uuid.uuid4(),
        user_id=user_id,
        title=title or DEFAULT_TITLE,
        title_is_automatic=title is None,
        model=resolved.id,
        prompt=prompt,
        use_documents=use_documents,
        document_ids=stored_ids(document_ids),
        last_activity_at=now,
        created_at=now,
        updated_at=now,
    )


def stored_ids(document_ids: list[uuid.UUID] | None) -> list[str] | None:
    """Document ids as their JSON column holds them."""
    return [str(document_id) for document_id in document_ids] if document_ids else None


def document_ids_of(stored: list[str] | None) -> list[uuid.UUID] | None:
    return [uuid.UUID(document_id) for document_id in stored] if stored else None


def add_conversation(session: AsyncSession, conversation: Conversation) -> None:
    session.add(conversation)
    record_conversation_created(session, conversation)


def name_after(conversation: Conversation, first_message: str) -> None:
    if conversation.title_is_automatic and conversation.title == DEFAULT_TITLE:
        title = " ".join(first_message.split())
        if len(title) > AUTOMATIC_TITLE_CHARACTERS:
            title = title[: AUTOMATIC_TITLE_CHARACTERS - 1].rstrip() + "…"
        conversation.title = title or DEFAULT_TITLE


async def update_conversation(
    session: AsyncSession,
    catalogue: ModelCatalogue,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    changes: BaseModel,
    *,
    replace: bool,
) -> Conversation:
    conversation = await get_owned(session, user_id, conversation_id)
    values = requested_values(changes, replace=replace)
    if values.get("model") is not None:
        values["model"] = (await catalogue.resolve(values["model"])).id
    if values.get("prompt") is not None:
        await prompts.require_prompt(session, values["prompt"])
    if "document_ids" in values:
        values["document_ids"] = stored_ids(values["document_ids"])
    changed = assign_changed(conversation, values)
    if "title" in changed:
        conversation.title_is_automatic = False
    if changed:
        await session.flush()
    return conversation


async def delete_conversation(
    session: AsyncSession, user_id: uuid.UUID, conversation_id: uuid.UUID
) -> None:
    conversation = await get_owned(session, user_id, conversation_id)
    record_conversation_deleted(session, conversation)
    await session.delete(conversation)
    await session.flush()


async def list_conversations(
    session: AsyncSession,
    user_id: uuid.UUID,
    page: PageParams,
    *,
    search: str | None,
    sort: ConversationSort,
    order: SortOrder,
) -> tuple[list[Conversation], Pagination]:
    query = select(Conversation).where(Conversation.user_id == user_id)
    if search:
        query = query.where(Conversation.title.icontains(search, autoescape=True))
    query = query.order_by(order_by(SORTABLE, sort, order), Conversation.id)
    return await paginate(session, query, page)


async def views(session: AsyncSession, conversations: list[Conversation]) -> list[dict[str, Any]]:
    """The conversations with their message count and token totals, in one query."""
    ids = [conversation.id for conversation in conversations]
    totals: dict[uuid.UUID, tuple[int, int, int]] = {}
    if ids:
        rows = await session.execute(
            select(
                Message.conversation_id,
                func.count(),
                func.coalesce(func.sum(Message.prompt_tokens), 0),
                func.coalesce(func.sum(Message.completion_tokens), 0),
            )
            .where(Message.conversation_id.in_(ids))
            .group_by(Message.conversation_id)
        )
        totals = {row[0]: (row[1], row[2], row[3]) for row in rows}
    result = []
    for conversation in conversations:
        count, prompt_tokens, completion_tokens = totals.get(conversation.id, (0, 0, 0))
        result.append(
            {
                "id": conversation.id,
                "title": conversation.title,
                "model": conversation.model,
                "prompt": conversation.prompt,
                "use_documents": conversation.use_documents,
                "document_ids": document_ids_of(conversation.document_ids),
                "message_count": count,
                "usage": usage_of(int(prompt_tokens), int(completion_tokens)),
                "current_message_id": conversation.current_message_id,
                "last_activity_at": conversation.last_activity_at,
                "created_at": conversation.created_at,
                "updated_at": conversation.updated_at,
            }
        )
    return result
