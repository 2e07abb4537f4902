"""Generating replies off the request path: a reply runs in a task of its own, so that a
client that disconnects loses nothing. Its pieces go to the reply's stream (which any
client can follow, resume or stop); its end is saved with the tokens really used."""

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi.encoders import jsonable_encoder
from sqlalchemy import update

from services.chat import metrics
from services.chat.events import record_message_created
from services.chat.models import Conversation, Message
from services.chat.providers.base import CompletionRequest, ProviderFailed, ProviderTimedOut, Usage
from services.chat.providers.catalogue import ModelCatalogue
from services.chat.service import usage
from services.chat.service.views import chat_response_view
from services.chat.settings import ChatSettings
from services.chat.slots import GenerationSlots
from services.chat.streams import DELTA, ERROR, RESPONSE, ReplyStreams, StreamEvent
from services.chat.tokens import count_prompt_tokens, count_tokens
from shared.db import Database, utcnow
from shared.errors import ApiError, ProviderError, UpstreamTimeout
from shared.logging import get_logger

log = get_logger(__name__)

# Seconds a shutting-down process gives running replies to save what they have.
SHUTDOWN_GRACE_SECONDS = 5.0


class ReplyNotSaved(Exception):
    """The rows of the question and its reply could not be committed."""


@dataclass(frozen=True)
class ReplyPlan:
    reply_id: uuid.UUID
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    request: CompletionRequest
    created_at: datetime


@dataclass
class RunningReply:
    plan: ReplyPlan
    # The first event (a delta, or the end when there is none) and the saved reply.
    first_event: "asyncio.Future[StreamEvent]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    finished: "asyncio.Future[Message]" = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    task: "asyncio.Task[None] | None" = None

    @property
    def id(self) -> uuid.UUID:
        return self.plan.reply_id


@dataclass
class Outcome:
    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    failure: ApiError | None = None


class ReplyGenerator:
    def __init__(
        self,
        database: Database,
        catalogue: ModelCatalogue,
        streams: ReplyStreams,
        slots: GenerationSlots,
        settings: ChatSettings,
    ) -> None:
        self._database = database
        self._catalogue = catalogue
        self._streams = streams
        self._slots = slots
        self._timeout = settings.chat_generation_timeout_seconds
        self._running: dict[uuid.UUID, RunningReply] = {}

    def launch(
        self, plan: ReplyPlan, slot: uuid.UUID, write_start: Callable[[], Coroutine[Any, Any, None]]
    ) -> RunningReply:
        """Starts the reply; `write_start` writes its question and row meanwhile."""
        reply = RunningReply(plan)
        self._streams.open(plan.reply_id, self._timeout)
        self._running[plan.reply_id] = reply
        reply.task = asyncio.create_task(self._run(reply, slot, write_start))
        # Nobody may be waiting (a client that left): retrieve the outcome so it is not lost.
        reply.finished.add_done_callback(lambda done: done.cancelled() or done.exception())
        return reply

    def running(self, reply_id: uuid.UUID) -> RunningReply | None:
        return self._running.get(reply_id)

    async def close(self) -> None:
        """Stops what is still running; each saves its partial answer as stopped."""
        replies = list(self._running.values())
        for reply in replies:
            await self._streams.request_stop(reply.id)
        tasks = [reply.task for reply in replies if reply.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)

    async def wind_down(self, finish_within: float, save_within: float) -> None:
        """At shutdown: the running replies may finish for `finish_within` seconds; those
        still running then are stopped and saved with what they have, within `save_within`
        more. Each one's stream ends with its last event."""
        tasks = [reply.task for reply in self._running.values() if reply.task is not None]
        if tasks and finish_within > 0:
            await asyncio.wait(tasks, timeout=finish_within)
        unfinished = list(self._running.values())
        for reply in unfinished:
            self._streams.stop_here(reply.id)
        tasks = [reply.task for reply in unfinished if reply.task is not None]
        if tasks:
            log.info("replies_stopped_for_shutdown", count=len(tasks))
            await asyncio.wait(tasks, timeout=max(save_within, 0.001))

    def _publish(self, reply: RunningReply, event: StreamEvent) -> None:
        self._streams.publish(reply.id, event)
        if not reply.first_event.done():
            reply.first_event.set_result(event)

    async def _run(
        self,
        reply: RunningReply,
        slot: uuid.UUID,
        write_start: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        writing = asyncio.create_task(write_start())

        def stop_unless_written(done: "asyncio.Task[None]") -> None:
            # A start that cannot be written stops the reply at once.
            if not done.cancelled() and done.exception() is not None:
                self._streams.stop_here(reply.id)

        writing.add_done_callback(stop_unless_written)
        metrics.STREAMS_IN_FLIGHT.inc()
        try:
            outcome = await self._generate(reply)
            await self._finish(reply, outcome, writing)
        except Exception:
            log.exception("reply_failed", message_id=str(reply.id))
            failure = ApiError("The reply could not be saved")
            self._publish(reply, _error_event(failure, 0))
            if not reply.finished.done():
                reply.finished.set_exception(failure)
        finally:
            metrics.STREAMS_IN_FLIGHT.dec()
            self._running.pop(reply.id, None)
            await asyncio.gather(writing, return_exceptions=True)
            await self._slots.release(reply.plan.user_id, slot)

    async def _generate(self, reply: RunningReply) -> Outcome:
        outcome = Outcome()
        pieces: list[str] = []
        offset = 0

        async def read() -> None:
            nonlocal offset
            async for piece in self._catalogue.provider.stream(reply.plan.request):
                if piece.text:
                    pieces.append(piece.text)
                    offset += len(piece.text)
                    data = {"id": str(reply.id), "delta": piece.text}
                    self._publish(reply, StreamEvent(DELTA, offset, data))
                outcome.usage = piece.usage or outcome.usage
                outcome.finish_reason = piece.finish_reason or outcome.finish_reason

        reading = asyncio.create_task(read())
        stop = asyncio.create_task(self._streams.wait_for_stop(reply.id))
        try:
            done, _ = await asyncio.wait(
                {reading, stop}, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
            if not reading.done():
                # Closing the provider's stream; what it produced so far is kept.
                reading.cancel()
            await asyncio.gather(reading, stop, return_exceptions=True)
        outcome.text = "".join(pieces)
        if reading in done:
            exception = reading.exception()
            if isinstance(exception, ProviderTimedOut):
                outcome.failure = UpstreamTimeout(str(exception))
            elif isinstance(exception, ProviderFailed):
                outcome.failure = ProviderError(str(exception))
            elif exception is not None:
                raise exception
            outcome.finish_reason = outcome.finish_reason or "stop"
        else:
            outcome.finish_reason = "stopped" if stop in done else "length"
            outcome.usage = None  # the provider's report, if any, came for a whole answer
        return outcome

    async def _finish(
        self, reply: RunningReply, outcome: Outcome, writing: "asyncio.Task[None]"
    ) -> None:
        plan = reply.plan
        try:
            await writing
        except Exception as exc:
            if not isinstance(exc, ReplyNotSaved):
                log.exception("reply_start_not_saved", message_id=str(reply.id))
            failure = ApiError("The message could not be saved")
            self._publish(reply, _error_event(failure, len(outcome.text)))
            reply.finished.set_exception(failure)
            return
        counted = outcome.usage or Usage(
            count_prompt_tokens(plan.request.messages), count_tokens(outcome.text)
        )
        async with self._database.unit_of_work() as session:
            row = await session.get(Message, reply.id)
            if row is None:
                # Deleted while it was being generated (its message or its conversation).
                failure = ApiError("The reply was deleted while it was being generated")
                self._publish(reply, _error_event(failure, len(outcome.text)))
                reply.finished.set_exception(failure)
                return
            if outcome.failure is not None and not outcome.text:
                # Nothing was produced: no reply is kept; the user's message stays.
                await session.execute(
                    update(Conversation)
                    .where(
                        Conversation.id == plan.conversation_id,
                        Conversation.current_message_id == row.id,
                    )
                    .values(current_message_id=row.parent_id)
                )
                await session.delete(row)
            else:
                row.content = outcome.text
                row.prompt_tokens = counted.prompt_tokens
                row.completion_tokens = counted.completion_tokens
                row.total_tokens = counted.total_tokens
                row.updated_at = utcnow()
                if outcome.failure is not None:
                    row.status, row.finish_reason = "failed", "error"
                    row.error_code = outcome.failure.code
                else:
                    row.status = "stopped" if outcome.finish_reason == "stopped" else "completed"
                    row.finish_reason = outcome.finish_reason
                    record_message_created(session, row)
            if outcome.failure is None or outcome.text:
                # The provider charges for what it produced, finished or not.
                await usage.record(session, plan.user_id, counted)
            await session.flush()
        model = plan.request.model
        if outcome.failure is None or outcome.text:
            metrics.TOKENS.labels(model, metrics.PROMPT).inc(counted.prompt_tokens)
            metrics.TOKENS.labels(model, metrics.COMPLETION).inc(counted.completion_tokens)
        metrics.REPLIES.labels(model, "failed" if outcome.failure is not None else row.status).inc()
        if outcome.failure is not None:
            self._publish(reply, _error_event(outcome.failure, len(outcome.text)))
            reply.finished.set_exception(outcome.failure)
            return
        data: dict[str, Any] = jsonable_encoder(chat_response_view(row))
        self._publish(reply, StreamEvent(RESPONSE, len(outcome.text), data))
        reply.finished.set_result(row)


async def end_abandoned(database: Database, older_than: timedelta) -> int:
    """Replies still generating after the longest a generation may run belong to a process
    that died: they end as stopped, with what was saved of them. Returns how many."""
    now = utcnow()
    async with database.unit_of_work() as session:
        result = await session.execute(
            update(Message)
            .where(Message.status == "generating", Message.created_at < now - older_than)
            .values(status="stopped", finish_reason="stopped", updated_at=now)
        )
    ended = int(getattr(result, "rowcount", 0) or 0)
    if ended:
        log.warning("abandoned_replies_ended", count=ended)
    return ended


def _error_event(failure: ApiError, offset: int) -> StreamEvent:
    return StreamEvent(ERROR, offset, {"code": failure.code, "message": failure.message})


def raise_failure(event: StreamEvent) -> None:
    """A stream that ended before its first piece: its error as the HTTP answer."""
    if event.kind != ERROR:
        return
    code = event.data.get("code")
    failure: ApiError
    if code == UpstreamTimeout.code:
        failure = UpstreamTimeout(event.data.get("message"))
    elif code == ProviderError.code:
        failure = ProviderError(event.data.get("message"))
    else:
        failure = ApiError(event.data.get("message"))
    raise failure
