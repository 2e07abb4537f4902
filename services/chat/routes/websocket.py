"""The chat WebSocket at `/ws`: the same events as the SSE streams, as JSON frames.

In: `{"type": "chat", "data": {"message", "model"?, "conversation_id"?, "temperature"?,
"max_tokens"?, "use_documents"?, "document_ids"?}}`, `{"type": "stop", "data": {"id"?}}`,
`{"type": "ping"}`.
Out: `{"type": "chat_delta", "data": {"id", "delta"}}`…, then `{"type": "chat_response",
"data": {...}}`; `{"type": "error", "data": {"code", "message"}}` (the socket stays open);
`{"type": "pong"}`. When the service shuts down, the socket takes no more frames, its
replies end (finished, or stopped and saved) and it closes with 1012 (service restart).

The token comes as `Authorization: Bearer` (from the gateway), `?token=` (or
`?access_token=`), or the subprotocols `bearer, <token>` so that it stays out of URLs; it is
verified at the handshake and again before each reply (revoked or expired: 4401 close), and
it is the token the documents service is asked with for `use_documents`. When the token
expires, the socket takes no more frames, lets its replies in flight end, sends a
`TOKEN_EXPIRED` error frame and closes with 4401: an idle socket does not outlive its token."""

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, ValidationError

from services.chat.deps import ChatCollaborators
from services.chat.routes.streaming import follow
from services.chat.schemas import (
    DocumentIds,
    MaxTokens,
    MessageText,
    ModelId,
    Temperature,
)
from services.chat.service import replies
from shared.errors import (
    ApiError,
    AuthenticationRequired,
    TokenExpired,
    ValidationFailed,
    error_response,
)
from shared.fields import Boolean
from shared.logging import get_logger

log = get_logger(__name__)
router = APIRouter()

BEARER_PROTOCOL = "bearer"
BEARER_PREFIX = "bearer."
POLICY_VIOLATION = 4401
SERVICE_RESTART = 1012


class ChatFrame(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: MessageText
    model: ModelId | None = None
    conversation_id: uuid.UUID | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    use_documents: Boolean | None = None
    document_ids: DocumentIds | None = None


def _token_and_protocol(websocket: WebSocket) -> tuple[str, str | None]:
    """The access token, and the subprotocol to accept when it came as one."""
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        offered = websocket.scope.get("subprotocols") or []
        return credentials.strip(), BEARER_PROTOCOL if BEARER_PROTOCOL in offered else None
    offered = list(websocket.scope.get("subprotocols") or [])
    if BEARER_PROTOCOL in offered:
        others = [protocol for protocol in offered if protocol != BEARER_PROTOCOL]
        if others:
            return others[0], BEARER_PROTOCOL
    for protocol in offered:
        if protocol.lower().startswith(BEARER_PREFIX):
            return protocol[len(BEARER_PREFIX) :], None
    token = websocket.query_params.get("token") or websocket.query_params.get("access_token")
    if not token:
        raise AuthenticationRequired()
    return token, None


def _error(exc: ApiError) -> dict[str, Any]:
    data: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details:
        data["details"] = exc.details
    return {"type": "error", "data": data}


class ChatSocket:
    """One client's socket: its replies in flight and the frames it is sent."""

    def __init__(
        self, websocket: WebSocket, chat: ChatCollaborators, token: str, expires_at: float
    ) -> None:
        self.websocket = websocket
        self.chat = chat
        self.token = token
        self.expires_at = expires_at
        self._send_lock = asyncio.Lock()
        self._replies: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(frame, ensure_ascii=False, default=str))

    async def serve(self) -> None:
        draining = asyncio.ensure_future(self.chat.shutdown.wait_draining())
        expiring = asyncio.ensure_future(asyncio.sleep(max(0.0, self.expires_at - time.time())))
        receiving: asyncio.Future[str] | None = None
        try:
            while True:
                receiving = asyncio.ensure_future(self.websocket.receive_text())
                await asyncio.wait(
                    {receiving, draining, expiring}, return_when=asyncio.FIRST_COMPLETED
                )
                if not receiving.done():
                    break
                await self.handle(receiving.result())
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
            await asyncio.gather(*self._replies.values(), return_exceptions=True)
            if draining.done():
                await self.websocket.close(SERVICE_RESTART, "service restart")
            else:
                await self.send(_error(TokenExpired()))
                await self.websocket.close(POLICY_VIOLATION)
        except WebSocketDisconnect:
            pass
        finally:
            draining.cancel()
            expiring.cancel()
            if receiving is not None:
                receiving.cancel()
            # The replies go on being generated and saved; only the forwarding stops.
            for task in self._replies.values():
                task.cancel()
            await asyncio.gather(*self._replies.values(), return_exceptions=True)

    async def handle(self, text: str) -> None:
        try:
            frame = json.loads(text)
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                raise ValueError()
        except ValueError:
            await self.send(_error(ValidationFailed('A frame is a JSON object with a "type"')))
            return
        kind, data = frame["type"], frame.get("data") or {}
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "chat":
            await self.start_reply(data)
        elif kind == "stop":
            await self.stop(data)
        else:
            message = f"Unknown frame type {kind!r}: chat, stop or ping"
            await self.send(_error(ValidationFailed(message)))

    async def start_reply(self, data: Any) -> None:
        try:
            identity = await self.chat.token_verifier.verify(self.token)
        except ApiError as exc:
            await self.send(_error(exc))
            await self.websocket.close(POLICY_VIOLATION)
            return
        try:
            request = ChatFrame.model_validate(data)
            started = await replies.reply_to_new_message(
                self.chat,
                identity.user_id,
                request.conversation_id,
                request.message,
                replies.ReplyOptions(
                    request.model,
                    request.temperature,
                    request.max_tokens,
                    request.use_documents,
                    request.document_ids,
                ),
                token=self.token,
            )
        except ValidationError as exc:
            issues = [
                {"field": ".".join(str(part) for part in error["loc"]), "issue": error["msg"]}
                for error in exc.errors()
            ]
            await self.send(_error(ValidationFailed(details={"errors": issues})))
            return
        except ApiError as exc:
            await self.send(_error(exc))
            return
        reply_id = started.running.id
        task = asyncio.create_task(self.forward(reply_id))
        self._replies[reply_id] = task
        task.add_done_callback(lambda _done: self._replies.pop(reply_id, None))

    async def forward(self, reply_id: uuid.UUID) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            async for event in follow(self.chat, reply_id, -1):
                await self.send({"type": event.kind, "data": event.data})

    async def stop(self, data: Any) -> None:
        wanted = data.get("id") if isinstance(data, dict) else None
        targets = list(self._replies)
        if wanted is not None:
            try:
                targets = [uuid.UUID(str(wanted))]
            except ValueError:
                await self.send(_error(ValidationFailed("`id` is a reply's id")))
                return
            if targets[0] not in self._replies:
                await self.send(_error(ValidationFailed("No reply of this socket has that id")))
                return
        for reply_id in targets:
            await self.chat.streams.request_stop(reply_id)


@router.websocket("/ws")
async def chat_socket(websocket: WebSocket) -> None:
    chat: ChatCollaborators = websocket.app.state.collaborators
    try:
        token, protocol = _token_and_protocol(websocket)
        identity = await chat.token_verifier.verify(token)
    except ApiError as exc:
        await websocket.send_denial_response(
            error_response(exc.status_code, exc.code, exc.message, exc.details)
        )
        return
    await websocket.accept(subprotocol=protocol)
    task = asyncio.current_task()
    assert task is not None
    chat.sockets.add(task)
    try:
        await ChatSocket(websocket, chat, token, identity.expires_at).serve()
    finally:
        chat.sockets.discard(task)
