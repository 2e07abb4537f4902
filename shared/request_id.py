"""`X-Request-ID` in and out of every hop, bound to the logs of the request (with the
name of the service answering it), and one access-log line per request with it."""

import re
import time
import uuid
from contextvars import ContextVar

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "x-request-id"
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
access_log = structlog.get_logger("access")


def current_request_id() -> str | None:
    return _request_id.get()


def accept_or_generate(candidate: str | None) -> str:
    if candidate and _WELL_FORMED.match(candidate):
        return candidate
    return str(uuid.uuid4())


class RequestIdMiddleware:
    """Pure ASGI, so that it costs nothing per streamed chunk."""

    def __init__(self, app: ASGIApp, service: str | None = None) -> None:
        self.app = app
        # Bound per request, so that each service of an embedded process names itself.
        self.log_context = {"service": service} if service else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = accept_or_generate(incoming)
        token = _request_id.set(request_id)
        log_tokens = structlog.contextvars.bind_contextvars(
            request_id=request_id, **self.log_context
        )
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode()
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", encoded))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            access_log.info(
                "request",
                method=scope.get("method", "WS"),
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.reset_contextvars(**log_tokens)
            _request_id.reset(token)
