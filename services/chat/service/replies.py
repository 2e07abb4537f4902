"""Starting a reply: the checks that come before any token (slot, quota, model, context),
the user's message and the reply's row in one transaction, then the generation itself."""

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from fastapi.encoders import jsonable_encoder
from sqlalchemy.ext.asyncio import AsyncSession

from services.chat.deps import ChatCollaborators
from services.chat.generation import ReplyNotSaved, ReplyPlan, RunningReply
from services.chat.models import Conversation, Message
from services.chat.providers.base import CompletionRequest
from services.chat.service import conversations, prompts, usage
from services.chat.service.messages import branch, get_owned_message
from services.chat.service.views import chat_response_view
from services.chat.sources import Source, citation, fit_with_sources
from services.chat.streams import ERROR, RESPONSE, StreamEvent, StreamGone
from services.chat.tokens import ChatTurn, ContextTooSmall
from shared.db import utcnow
from shared.errors import ApiError, Conflict, ProviderError, ValidationFailed

# What is kept free for the answer when the request does not set max_tokens.
DEFAULT_ANSWER_RESERVE = 1024
# How long stopping a reply generated on another replica waits for it to end.
STOP_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class ReplyOptions:
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    # None: as the question was asked (a new one: as its conversation says).
    use_documents: bool | None = None
    document_ids: list[uuid.UUID] | None = None


@dataclass(frozen=True)
class StartedReply:
    running: RunningReply
    user_message: Message
    reply: Message


@dataclass
class Question:
    """What a reply answers, and what is new about it (written when the reply starts)."""

    conversation: Conversation
    message: Message
    new_conversation: bool = False
    new_message: bool = False


@dataclass(frozen=True)
class DocumentSearch:
    """The user's documents a reply is given passages of (all of them when no ids)."""

    document_ids: list[uuid.UUID] | None


async def reply_to_new_message(
    collaborators: ChatCollaborators,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    content: str,
    options: ReplyOptions,
    *,
    token: str,
) -> StartedReply:
    """The user says something (in a conversation, or in a new one when none is named) and
    a reply starts. `token` is the user's access token, for the documents service."""

    async def the_question(session: AsyncSession) -> Question:
        if conversation_id is None:
            conversation = await conversations.new_conversation(
                session,
                collaborators.catalogue,
                user_id,
                title=None,
                model=options.model,
                prompt=None,
            )
        else:
            conversation = await conversations.get_owned(session, user_id, conversation_id)
        use_documents = options.use_documents
        if use_documents is None:
            use_documents = conversation.use_documents
        document_ids = options.document_ids
        if document_ids is None:
            document_ids = conversations.document_ids_of(conversation.document_ids)
        now = utcnow()
        message = Message(
            id=uuid.uuid4(),
            conversation_id=conversation.id,
            user_id=user_id,
            parent_id=conversation.current_message_id,
            role="user",
            content=content,
            model=options.model or conversation.model,
            status="completed",
            use_documents=use_documents,
            document_ids=conversations.stored_ids(document_ids),
            created_at=now,
            updated_at=now,
        )
        return Question(conversation, message, conversation_id is None, new_message=True)

    return await _start(collaborators, user_id, token, the_question, options)


async def regenerate(
    collaborators: ChatCollaborators,
    user_id: uuid.UUID,
    message_id: uuid.UUID,
    options: ReplyOptions,
    *,
    token: str,
) -> StartedReply:
    """A new reply to the same message: a sibling of the reply named (both are kept), or a
    first reply to the user message named; the conversation moves to the new branch. It is
    given the user's documents as the message was, unless `options` say otherwise."""

    async def the_question(session: AsyncSession) -> Question:
        target = await get_owned_message(session, user_id, message_id)
        message = target
        if target.role == "assistant":
            if target.status == "generating":
                raise Conflict("This reply is still being generated")
            parent = await session.get(Message, target.parent_id) if target.parent_id else None
            if parent is None:
                raise Conflict("This reply answers no message")
            message = parent
        conversation = await conversations.get_owned(session, user_id, message.conversation_id)
        return Question(conversation, message)

    return await _start(collaborators, user_id, token, the_question, options)


async def _start(
    collaborators: ChatCollaborators,
    user_id: uuid.UUID,
    token: str,
    the_question: Callable[[AsyncSession], Awaitable[Question]],
    options: ReplyOptions,
) -> StartedReply:
    """Everything that can refuse a reply is checked first (slot, quota, conversation,
    the user's documents when asked, model, context). Then the provider is asked at once,
    and the question and the reply's row are written while the first token is on its way:
    the reply saves its end only once they are committed, and stops with an error (saving
    nothing) if they cannot be."""
    slot = await collaborators.slots.acquire(user_id)
    try:
        async with collaborators.database.unit_of_work() as session:
            await usage.check_quota(session, user_id, collaborators.settings.chat_daily_token_limit)
            question = await the_question(session)
            search = _document_search(question.message, options)
            if search is None:
                planned = await _plan(collaborators, session, question, options, None)
        if search is not None:
            # Outside any transaction: the documents service may take its time.
            sources = await collaborators.documents.search(
                token, question.message.content, search.document_ids
            )
            async with collaborators.database.unit_of_work() as session:
                planned = await _plan(collaborators, session, question, options, sources)
        plan, reply = planned
    except BaseException:
        await collaborators.slots.release(user_id, slot)
        raise
    running = collaborators.generator.launch(
        plan, slot, lambda: _write_start(collaborators, question, reply)
    )
    return StartedReply(running, question.message, reply)


async def _write_start(
    collaborators: ChatCollaborators, question: Question, reply: Message
) -> None:
    async with collaborators.database.unit_of_work() as session:
        if question.new_conversation:
            conversation = question.conversation
            conversations.add_conversation(session, conversation)
        else:
            found = await session.get(Conversation, question.conversation.id, with_for_update=True)
            if found is None:
                raise ReplyNotSaved("The conversation was deleted")
            conversation = found
        if question.new_message:
            session.add(question.message)
            conversations.name_after(conversation, question.message.content)
        session.add(reply)
        conversation.current_message_id = reply.id
        conversation.last_activity_at = reply.created_at
        await session.flush()


def _document_search(question: Message, options: ReplyOptions) -> DocumentSearch | None:
    """Whether the reply is given passages of the user's documents, and of which: as the
    options say, else as the question was asked."""
    use_documents = options.use_documents
    if use_documents is None:
        use_documents = question.use_documents
    if not use_documents:
        return None
    document_ids = options.document_ids
    if document_ids is None:
        document_ids = conversations.document_ids_of(question.document_ids)
    return DocumentSearch(document_ids)


async def _plan(
    collaborators: ChatCollaborators,
    session: AsyncSession,
    asked: Question,
    options: ReplyOptions,
    sources: list[Source] | None,
) -> tuple[ReplyPlan, Message]:
    """The provider request (the prompt and the sources, the history that fits, the
    question) and the reply's row, not yet added. `sources` is None when the user's
    documents were not searched."""
    conversation, question = asked.conversation, asked.message
    model = await collaborators.catalogue.resolve(options.model or conversation.model)
    earlier = await branch(session, conversation.id, question.parent_id)
    history: list[ChatTurn] = [
        {"role": row.role, "content": row.content}
        for row in earlier
        if row.role == "user" or row.status in ("completed", "stopped")
    ]
    prompt = await prompts.resolve(session, conversation.prompt) if conversation.prompt else None
    # Room kept for the answer when the history is cut; the provider judges max_tokens.
    reserve = min(options.max_tokens or DEFAULT_ANSWER_RESERVE, model.context_window // 4)
    try:
        turns, sources = fit_with_sources(
            prompt.content if prompt else None,
            sources,
            history,
            {"role": "user", "content": question.content},
            model.context_window - reserve,
        )
    except ContextTooSmall:
        raise ValidationFailed(
            f"The message does not fit the context window of {model.id}",
            details={"field": "content", "issue": f"over {model.context_window} tokens"},
        ) from None
    created_at = max(utcnow(), question.created_at + timedelta(microseconds=1))
    reply = Message(
        id=uuid.uuid4(),
        conversation_id=conversation.id,
        user_id=conversation.user_id,
        parent_id=question.id,
        role="assistant",
        content="",
        model=model.id,
        status="generating",
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        prompt_name=prompt.name if prompt else None,
        prompt_version=prompt.version if prompt else None,
        citations=[citation(source) for source in sources] if sources is not None else None,
        created_at=created_at,
        updated_at=created_at,
    )
    request = CompletionRequest(
        model=model.id,
        messages=turns,
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        sources=tuple(sources) if sources is not None else None,
    )
    plan = ReplyPlan(reply.id, conversation.id, conversation.user_id, request, created_at)
    return plan, reply


async def finished(running: RunningReply) -> Message:
    """The saved reply; the generation goes on if the client leaves while waiting."""
    return await asyncio.shield(running.finished)


async def stop(
    collaborators: ChatCollaborators, user_id: uuid.UUID, message_id: uuid.UUID
) -> Message:
    async with collaborators.database.unit_of_work() as session:
        reply = await get_owned_message(session, user_id, message_id)
    if reply.role != "assistant":
        raise Conflict("Only replies can be stopped: this is a user's message")
    if reply.status != "generating":
        return reply
    await collaborators.streams.request_stop(message_id)
    running = collaborators.generator.running(message_id)
    if running is not None:
        with contextlib.suppress(ApiError):
            return await asyncio.shield(running.finished)
    else:
        # Generated on another replica: its end comes through the stream.
        try:
            async with asyncio.timeout(STOP_WAIT_SECONDS):
                async for _event in collaborators.streams.follow(message_id):
                    pass
        except StreamGone:
            await _mark_interrupted(collaborators, message_id)
        except TimeoutError:
            pass
    async with collaborators.database.unit_of_work() as session:
        return await get_owned_message(session, user_id, message_id)


async def _mark_interrupted(collaborators: ChatCollaborators, message_id: uuid.UUID) -> None:
    """A reply whose process died while generating it: what was saved is all there is."""
    async with collaborators.database.unit_of_work() as session:
        reply = await session.get(Message, message_id)
        if reply is not None and reply.status == "generating":
            reply.status, reply.finish_reason = "stopped", "stopped"
            reply.updated_at = utcnow()


def last_event_of(reply: Message) -> StreamEvent:
    """How a reply that no stream holds any more ends, rebuilt from its row."""
    offset = len(reply.content)
    if reply.status in ("completed", "stopped"):
        return StreamEvent(RESPONSE, offset, jsonable_encoder(chat_response_view(reply)))
    if reply.status == "failed":
        code = reply.error_code or ProviderError.code
        return StreamEvent(ERROR, offset, {"code": code, "message": "The reply failed"})
    data = {"code": "INTERNAL_ERROR", "message": "The reply's generation was interrupted"}
    return StreamEvent(ERROR, offset, data)
