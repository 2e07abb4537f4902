"""WebSocket proxy: the token is checked at the handshake (an `Authorization` header, or an
`access_token` query parameter for browsers, which cannot set headers on a WebSocket), then
frames are relayed both ways until either side closes."""

import asyncio
import contextlib
import json
from urllib.parse import parse_qs

from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.metrics import WEBSOCKETS
from gateway.routing import Upstream
from shared.errors import ApiError, AuthenticationRequired, ServiceUnavailable, error_body
from shared.logging import get_logger
from shared.request_id import current_request_id
from shared.security import Identity, TokenVerifier

log = get_logger(__name__)

FORWARDED = {b"cookie", b"user-agent", b"accept-language", b"origin"}


class WebSocketProxy:
    def __init__(self, verifier: TokenVerifier, connect_timeout: float) -> None:
        self._verifier = verifier
        self._connect_timeout = connect_timeout

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: str, upstream: Upstream | None
    ) -> None:
        connected = await receive()
        assert connected["type"] == "websocket.connect"
        try:
            identity = await self._authenticate(scope)
            if upstream is None:
                raise ServiceUnavailable(f"The {name} service is unavailable")
            upstream_socket = await self._connect(scope, upstream, identity)
        except ApiError as exc:
            await self._deny(scope, send, exc)
            return
        subprotocol = upstream_socket.subprotocol
        await send({"type": "websocket.accept", "subprotocol": subprotocol})
        WEBSOCKETS.labels(upstream.name).inc()
        try:
            await self._relay(receive, send, upstream_socket)
        finally:
            WEBSOCKETS.labels(upstream.name).dec()
            await upstream_socket.close()

    async def _authenticate(self, scope: Scope) -> Identity:
        headers = dict(scope["headers"])
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            token = (query.get("access_token") or [""])[0]
        if not token.strip():
            raise AuthenticationRequired()
        return await self._verifier.verify(token.strip())

    async def _connect(
        self, scope: Scope, upstream: Upstream, identity: Identity
    ) -> ClientConnection:
        url = upstream.url.replace("http", "ws", 1) + scope["path"]
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name in FORWARDED
        ]
        headers += [
            ("x-request-id", current_request_id() or ""),
            ("x-user-id", str(identity.user_id)),
            ("x-user-roles", ",".join(identity.roles)),
        ]
        try:
            return await connect(
                url,
                additional_headers=headers,
                subprotocols=scope.get("subprotocols") or None,
                open_timeout=self._connect_timeout,
                compression=None,
                max_size=None,
                proxy=None,
            )
        except Exception as exc:
            log.warning("websocket_upstream_unavailable", upstream=upstream.name, error=repr(exc))
            raise ServiceUnavailable(f"The {upstream.name} service is unavailable") from exc

    @staticmethod
    async def _relay(receive: Receive, send: Send, upstream: ClientConnection) -> None:
        async def client_to_upstream() -> None:
            while True:
                message: Message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await upstream.send(message["text"])
                elif message.get("bytes") is not None:
                    await upstream.send(message["bytes"])

        async def upstream_to_client() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for frame in upstream:
                    if isinstance(frame, str):
                        await send({"type": "websocket.send", "text": frame})
                    else:
                        await send({"type": "websocket.send", "bytes": frame})
            code = upstream.close_code or 1000
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code})

        tasks = [
            asyncio.create_task(client_to_upstream()),
            asyncio.create_task(upstream_to_client()),
        ]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _deny(scope: Scope, send: Send, exc: ApiError) -> None:
        """An HTTP answer in the envelope when the server can send one, else a close code."""
        if "websocket.http.response" in scope.get("extensions", {}):
            body = json.dumps(error_body(exc.code, exc.message, exc.details)).encode()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": exc.status_code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"x-request-id", (current_request_id() or "").encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "websocket.close", "code": 4000 + exc.status_code})
