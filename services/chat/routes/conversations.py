import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from sse_starlette import EventSourceResponse

from services.chat.deps import AccessToken, ChatDep
from services.chat.openapi import sse_answer
from services.chat.routes.streaming import exchange_or_stream, wants_stream
from services.chat.schemas import (
    ConversationCreate,
    ConversationPatch,
    ConversationResponse,
    ConversationSort,
    ConversationUpdate,
    Exchange,
    MessageCreate,
    MessageResponse,
)
from services.chat.service import conversations, messages, replies
from services.chat.service.views import message_view
from shared.deps import CurrentIdentity, PageDep, SessionDep
from shared.openapi import error_responses
from shared.pagination import Page, SortOrder
from shared.text import Text

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])


@router.get("", response_model=Page[ConversationResponse])
async def list_conversations(
    identity: CurrentIdentity,
    session: SessionDep,
    page: PageDep,
    search: Text | None = Query(None, max_length=200, description="Part of a title"),
    sort: ConversationSort = "last_activity_at",
    order: SortOrder = "desc",
) -> dict[str, Any]:
    """The user's conversations, the most recently active first."""
    rows, pagination = await conversations.list_conversations(
        session, identity.user_id, page, search=search, sort=sort, order=order
    )
    return {"data": await conversations.views(session, rows), "pagination": pagination}


@router.post("", status_code=201, response_model=ConversationResponse)
async def create_conversation(
    body: ConversationCreate,
    identity: CurrentIdentity,
    session: SessionDep,
    chat: ChatDep,
    response: Response,
) -> dict[str, Any]:
    conversation = await conversations.create_conversation(
        session,
        chat.catalogue,
        identity.user_id,
        title=body.title,
        model=body.model,
        prompt=body.prompt,
        use_documents=body.use_documents,
        document_ids=body.document_ids,
    )
    response.headers["Location"] = f"/api/v1/conversations/{conversation.id}"
    return (await conversations.views(session, [conversation]))[0]


@router.get("/{conversation_id}", response_model=ConversationResponse)
async def get_conversation(
    conversation_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> dict[str, Any]:
    conversation = await conversations.get_owned(session, identity.user_id, conversation_id)
    return (await conversations.views(session, [conversation]))[0]


@router.put("/{conversation_id}", response_model=ConversationResponse)
async def replace_conversation(
    conversation_id: uuid.UUID,
    body: ConversationUpdate,
    identity: CurrentIdentity,
    session: SessionDep,
    chat: ChatDep,
) -> dict[str, Any]:
    conversation = await conversations.update_conversation(
        session, chat.catalogue, identity.user_id, conversation_id, body, replace=True
    )
    return (await conversations.views(session, [conversation]))[0]


@router.patch("/{conversation_id}", response_model=ConversationResponse)
async def update_conversation(
    conversation_id: uuid.UUID,
    body: ConversationPatch,
    identity: CurrentIdentity,
    session: SessionDep,
    chat: ChatDep,
) -> dict[str, Any]:
    conversation = await conversations.update_conversation(
        session, chat.catalogue, identity.user_id, conversation_id, body, replace=False
    )
    return (await conversations.views(session, [conversation]))[0]


@router.delete("/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> Response:
    """Deletes the conversation with all its messages."""
    await conversations.delete_conversation(session, identity.user_id, conversation_id)
    return Response(status_code=204)


@router.get("/{conversation_id}/messages", response_model=Page[MessageResponse])
async def list_messages(
    conversation_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep, page: PageDep
) -> dict[str, Any]:
    """The current branch, oldest first (a regenerated reply replaces its sibling here)."""
    rows, pagination = await messages.list_branch(session, identity.user_id, conversation_id, page)
    return {"data": [message_view(row) for row in rows], "pagination": pagination}


@router.post(
    "/{conversation_id}/messages",
    status_code=201,
    response_model=Exchange,
    responses={
        **sse_answer(
            "With `stream` (or `Accept: text/event-stream`): Server-Sent Events "
            "`chat_delta`, then `chat_response` or `error`"
        ),
        **error_responses(429, 502, 504),
    },
)
async def post_message(
    conversation_id: uuid.UUID,
    body: MessageCreate,
    identity: CurrentIdentity,
    token: AccessToken,
    chat: ChatDep,
    request: Request,
    response: Response,
) -> dict[str, Any] | EventSourceResponse:
    """Adds the user's message and generates the reply; with `use_documents`, from the
    passages of the user's documents that best match the message, which the reply cites."""
    started = await replies.reply_to_new_message(
        chat,
        identity.user_id,
        conversation_id,
        body.content,
        replies.ReplyOptions(
            body.model,
            body.temperature,
            body.max_tokens,
            body.use_documents,
            body.document_ids,
        ),
        token=token,
    )
    return await exchange_or_stream(chat, started, wants_stream(request, body.stream), response)
