"""A service's own limit on request bodies, whoever sends them: the gateway has one, but a
client that reaches a service directly must not make it read and parse a huge body."""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the streamed body passes the limit; the error handlers
    answer it as 413 PAYLOAD_TOO_LARGE."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Body exceeds {max_bytes} bytes")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed Content-Length itself
    return None


class BodySizeLimitMiddleware:
    """Pure ASGI: refuses a declared Content-Length over `max_bytes` before reading
    anything, and counts the bytes of a streamed (chunked) body as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Normally the error handlers answer it; this is for a body read outside them.
            if response_started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "PAYLOAD_TOO_LARGE", f"Body exceeds {self.max_bytes} bytes")
        await response(scope, receive, send)
