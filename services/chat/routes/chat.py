"""The simple API: one call per exchange, a flat history, the day's usage."""

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from sse_starlette import EventSourceResponse

from services.chat.deps import AccessToken, ChatDep
from services.chat.routes.messages import SSE_ANSWER
from services.chat.routes.streaming import stream_started_reply, wants_stream
from services.chat.schemas import ChatRequest, ChatResponse, HistoryPage, UsagePeriod
from services.chat.service import messages, replies, usage
from services.chat.service.views import chat_response_view
from shared.deps import CurrentIdentity, SessionDep
from shared.openapi import error_responses

router = APIRouter(prefix="/api/v1/chat", tags=["chat"])


@router.post(
    "",
    status_code=201,
    response_model=ChatResponse,
    responses={**SSE_ANSWER, **error_responses(429, 502, 504)},
)
async def chat(
    body: ChatRequest,
    identity: CurrentIdentity,
    token: AccessToken,
    chat: ChatDep,
    request: Request,
    response: Response,
) -> dict[str, Any] | EventSourceResponse:
    """Sends a message and answers with the reply; without `conversation_id` a new
    conversation starts. With `use_documents` the reply is given the passages of the
    user's documents that best match the message, and cites them."""
    started = await replies.reply_to_new_message(
        chat,
        identity.user_id,
        body.conversation_id,
        body.message,
        replies.ReplyOptions(
            body.model,
            body.temperature,
            body.max_tokens,
            body.use_documents,
            body.document_ids,
        ),
        token=token,
    )
    if wants_stream(request, body.stream):
        return await stream_started_reply(chat, started.running)
    reply = await replies.finished(started.running)
    response.headers["Location"] = f"/api/v1/messages/{reply.id}"
    return chat_response_view(reply)


@router.get("/history", response_model=HistoryPage)
async def history(
    identity: CurrentIdentity,
    session: SessionDep,
    limit: int = Query(50, ge=1, le=100),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> dict[str, Any]:
    """Each reply with the message it answers, newest first, across conversations."""
    return await messages.history(session, identity.user_id, limit, offset)


@router.get("/usage", response_model=UsagePeriod)
async def current_usage(
    identity: CurrentIdentity, session: SessionDep, chat: ChatDep
) -> dict[str, Any]:
    """Tokens used in the current period (the UTC day) and the limit."""
    limit = chat.settings.chat_daily_token_limit
    return await usage.current_period(session, identity.user_id, limit)
