"""Server-Sent Events for replies: `chat_delta` pieces, then `chat_response` or `error`;
a comment heartbeat every 15 s; never buffered by a proxy. Each event's id is the answer's
length so far, for `Last-Event-ID`."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import AppStatus

from services.chat.deps import ChatCollaborators
from services.chat.generation import RunningReply, raise_failure
from services.chat.service import replies
from services.chat.service.replies import StartedReply
from services.chat.service.views import message_view
from services.chat.streams import DELTA, ERROR, GoingAway, StreamEvent, StreamGone
from shared.errors import ServiceUnavailable, ValidationFailed

HEARTBEAT_SECONDS = 15
STREAM_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
INTERRUPTED = StreamEvent(
    ERROR, 0, {"code": "INTERNAL_ERROR", "message": "The reply's generation was interrupted"}
)

# A stream ends by itself when the service shuts down, with a last event
# (ChatCollaborators' drain); sse-starlette's own handling would cut it at SIGTERM.
AppStatus.enable_automatic_graceful_drain = False


def going_away(reply_id: uuid.UUID, offset: int) -> StreamEvent:
    """The last event of a stream whose service is shutting down: its id is the offset to
    resume from, on another replica."""
    message = (
        "The service is restarting: follow the reply again at "
        f"/api/v1/messages/{reply_id}/stream with Last-Event-ID: {offset}"
    )
    return StreamEvent(ERROR, offset, {"code": ServiceUnavailable.code, "message": message})


def wants_stream(request: Request, stream: bool) -> bool:
    return stream or "text/event-stream" in request.headers.get("accept", "")


def last_event_id(request: Request) -> int:
    value = request.headers.get("last-event-id", "").strip()
    if not value:
        return -1
    if not value.isdigit():
        raise ValidationFailed(
            "Last-Event-ID is an offset from a previous event",
            details={"field": "Last-Event-ID", "issue": "not a number"},
        )
    return int(value)


def sse(events: AsyncIterator[StreamEvent]) -> EventSourceResponse:
    async def encoded() -> AsyncIterator[ServerSentEvent]:
        async for event in events:
            yield ServerSentEvent(
                json.dumps(event.data, ensure_ascii=False), event=event.kind, id=str(event.offset)
            )

    return EventSourceResponse(encoded(), ping=HEARTBEAT_SECONDS, headers=STREAM_HEADERS)


async def stream_started_reply(
    collaborators: ChatCollaborators, running: RunningReply
) -> EventSourceResponse:
    """Waits for the first event: a reply that fails before its first piece is an HTTP
    error (502, 504), not a stream that says so."""
    first = await asyncio.shield(running.first_event)
    raise_failure(first)
    return sse(follow(collaborators, running.id, -1))


async def exchange_or_stream(
    collaborators: ChatCollaborators, started: StartedReply, stream: bool, response: Response
) -> dict[str, Any] | EventSourceResponse:
    """A started reply as the messages API answers it: its events, or, once it is saved,
    the user's message and the reply."""
    if stream:
        return await stream_started_reply(collaborators, started.running)
    reply = await replies.finished(started.running)
    response.headers["Location"] = f"/api/v1/messages/{reply.id}"
    return {
        "user_message": message_view(started.user_message),
        "assistant_message": message_view(reply),
    }


async def follow(
    collaborators: ChatCollaborators, reply_id: uuid.UUID, after: int
) -> AsyncIterator[StreamEvent]:
    offset = max(after, 0)
    try:
        async for event in collaborators.streams.follow(reply_id, after):
            if event.kind == DELTA:
                offset = event.offset
            yield event
    except StreamGone:
        yield INTERRUPTED
    except GoingAway:
        yield going_away(reply_id, offset)


def replay_saved(content: str, after: int, last: StreamEvent) -> AsyncIterator[StreamEvent]:
    """A reply no stream holds any more, rebuilt from the database: the text after `after`
    in one piece, then its last event."""

    async def events() -> AsyncIterator[StreamEvent]:
        start = max(after, 0)
        if len(content) > start:
            data = {"id": last.data.get("id"), "delta": content[start:]}
            yield StreamEvent(DELTA, len(content), data)
        yield last

    return events()
