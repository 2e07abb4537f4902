"""A service's own limit on request bodies, whoever sends them: the gateway has one, but a
client that reaches a service directly must not make it read and parse a huge body."""

from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import error_response
from shared.routes import RoutePatterns

# (method, path pattern, max bytes): a route whose bodies have a limit of their own. The
# method is a method or `*`, the path as the service sees it (shell-style wildcards allowed).
RouteBodyLimit = tuple[str, str, int]


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the streamed body passes the limit; the error handlers
    answer it as 413 PAYLOAD_TOO_LARGE."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"Body exceeds {max_bytes} bytes")


def _declared_length(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length, and whether the request has a body at all (HTTP/1.1:
    only with a Content-Length or a Transfer-Encoding)."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return None, True  # the server refuses a malformed Content-Length itself
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked or bool(length)


class BodySizeLimitMiddleware:
    """Pure ASGI: refuses a declared Content-Length over the limit before reading anything,
    and counts the bytes of a streamed (chunked) body as they arrive. The limit is
    `max_bytes`, or that of the first of `route_limits` the request matches."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, route_limits: Sequence[RouteBodyLimit] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._route_limits = [
            (RoutePatterns([f"{method} {path}"]), limit) for method, path, limit in route_limits
        ]

    def _limit(self, scope: Scope) -> int:
        for route, limit in self._route_limits:
            if route.match(scope["method"], scope["path"]):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, has_body = _declared_length(scope)
        if not has_body:
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit(scope) if self._route_limits else self.max_bytes
        if declared is not None and declared > max_bytes:
            await _refuse(max_bytes, scope, receive, send)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
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
            await _refuse(max_bytes, scope, receive, send)


async def _refuse(max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(413, "PAYLOAD_TOO_LARGE", f"Body exceeds {max_bytes} bytes")
    await response(scope, receive, send)
