import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ConfigDict
from sse_starlette import EventSourceResponse

from services.chat.deps import AccessToken, ChatDep
from services.chat.openapi import sse_answer
from services.chat.routes.streaming import (
    exchange_or_stream,
    follow,
    last_event_id,
    replay_saved,
    sse,
    wants_stream,
)
from services.chat.schemas import Exchange, MessageEdit, MessageResponse, ReplyOptions
from services.chat.service import messages, replies
from services.chat.service.views import message_view
from shared.deps import CurrentIdentity, SessionDep
from shared.errors import Conflict
from shared.openapi import error_responses

router = APIRouter(prefix="/api/v1/messages", tags=["messages"])

SSE_ANSWER = sse_answer("Server-Sent Events `chat_delta`, then `chat_response` or `error`")


class RegenerateOptions(ReplyOptions):
    model_config = ConfigDict(extra="forbid")


@router.get("/{message_id}", response_model=MessageResponse)
async def get_message(
    message_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> dict[str, Any]:
    return message_view(await messages.get_owned_message(session, identity.user_id, message_id))


@router.put("/{message_id}", response_model=MessageResponse)
async def edit_message(
    message_id: uuid.UUID, body: MessageEdit, identity: CurrentIdentity, session: SessionDep
) -> dict[str, Any]:
    """Edits the content of one of the user's own messages."""
    row = await messages.edit_message(session, identity.user_id, message_id, body.content)
    return message_view(row)


@router.delete("/{message_id}", status_code=204)
async def delete_message(
    message_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep
) -> Response:
    """Deletes the message and the replies below it."""
    await messages.delete_message(session, identity.user_id, message_id)
    return Response(status_code=204)


@router.post(
    "/{message_id}/regenerate",
    status_code=201,
    response_model=Exchange,
    responses={**SSE_ANSWER, **error_responses(429, 502, 504)},
)
async def regenerate(
    message_id: uuid.UUID,
    identity: CurrentIdentity,
    token: AccessToken,
    chat: ChatDep,
    request: Request,
    response: Response,
    body: RegenerateOptions | None = None,
) -> dict[str, Any] | EventSourceResponse:
    """A new reply to the same message, kept beside the old one; the conversation's
    current branch moves to it. It is given the user's documents as the message was,
    unless `use_documents` or `document_ids` say otherwise."""
    options = body or RegenerateOptions()
    started = await replies.regenerate(
        chat,
        identity.user_id,
        message_id,
        replies.ReplyOptions(
            options.model,
            options.temperature,
            options.max_tokens,
            options.use_documents,
            options.document_ids,
        ),
        token=token,
    )
    return await exchange_or_stream(chat, started, wants_stream(request, options.stream), response)


@router.post("/{message_id}/stop", response_model=MessageResponse)
async def stop(message_id: uuid.UUID, identity: CurrentIdentity, chat: ChatDep) -> dict[str, Any]:
    """Ends a running reply: the partial answer is saved with `finish_reason` "stopped" and
    the tokens produced are counted. A reply that has already ended is returned as it is."""
    return message_view(await replies.stop(chat, identity.user_id, message_id))


@router.get("/{message_id}/stream", responses=SSE_ANSWER, response_class=EventSourceResponse)
async def resume(
    message_id: uuid.UUID,
    identity: CurrentIdentity,
    session: SessionDep,
    chat: ChatDep,
    request: Request,
) -> EventSourceResponse:
    """Replays a reply, running or finished, from `Last-Event-ID` (the length of the text
    already received) on: the pieces still missing, then `chat_response` or `error`."""
    after = last_event_id(request)
    message = await messages.get_owned_message(session, identity.user_id, message_id)
    if message.role != "assistant":
        raise Conflict("Only replies can be streamed: this is a user's message")
    if await chat.streams.has(message_id):
        return sse(follow(chat, message_id, after))
    return sse(replay_saved(message.content, after, replies.last_event_of(message)))
