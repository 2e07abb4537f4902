"""WebSocket proxy: the token is checked and the request counted at the handshake, then
frames are relayed both ways until either side closes.

Browsers cannot set headers on a WebSocket, so besides `Authorization: Bearer …` the token
may come as the `token` (or `access_token`) query parameter, or as subprotocols, which keep
it out of URLs and their logs: `Sec-WebSocket-Protocol: bearer, <token>` or `bearer.<token>`.
The token is never the selected subprotocol: with the subprotocol form the answer selects
`bearer` (unless the upstream chose another subprotocol the client offered).

The upstream gets the client's token as `Authorization: Bearer …` and verifies it itself
(no service trusts an identity header); it also gets the query string, the subprotocols
offered except the token, X-Request-ID, X-Forwarded-* and the trace context. A handshake the
upstream refuses with 400, 401, 403 or 404 reaches the client with that status, in the
envelope."""

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from opentelemetry import propagate
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from gateway.metrics import WEBSOCKETS
from gateway.ratelimit import ClientAddress, RateLimits
from gateway.redaction import TOKEN_PARAMETERS
from gateway.routing import Upstream
from gateway.settings import GatewaySettings
from shared.errors import (
    CODE_BY_STATUS,
    DEFAULT_MESSAGES,
    ApiError,
    AuthenticationRequired,
    ServiceUnavailable,
    ValidationFailed,
    error_body,
)
from shared.logging import get_logger
from shared.request_id import current_request_id
from shared.security import Identity, TokenVerifier

log = get_logger(__name__)

FORWARDED = {b"cookie", b"user-agent", b"accept-language", b"origin"}
# Upstream handshake refusals passed on to the client as they are (anything else is 503).
RELAYED_STATUSES = {400, 401, 403, 404}
# The subprotocol that says the next one offered is the token; `bearer.<token>` is one entry.
BEARER = "bearer"
BEARER_PREFIX = "bearer."


@dataclass(frozen=True)
class Credentials:
    token: str
    # What the upstream is offered: the client's subprotocols without the token.
    subprotocols: list[str]
    # The client's own spelling of `bearer` when it offered it: selected unless the upstream
    # selects another of the client's subprotocols.
    bearer: str | None


class UpstreamRefusal(ApiError):
    """The upstream refused the handshake; its status (and envelope code) reach the client."""

    def __init__(self, status: int, code: str, message: str | None) -> None:
        self.status_code = status
        self.code = code
        super().__init__(message)


class WebSocketProxy:
    def __init__(
        self, settings: GatewaySettings, verifier: TokenVerifier, rate_limits: RateLimits
    ) -> None:
        self._verifier = verifier
        self._rate_limits = rate_limits
        self._addresses = ClientAddress(settings.trusted_proxies)
        self._connect_timeout = settings.upstream_connect_timeout_seconds

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: str, upstream: Upstream | None
    ) -> None:
        connected = await receive()
        assert connected["type"] == "websocket.connect"
        rate_limit: list[tuple[bytes, bytes]] = []
        try:
            credentials, identity, client_ip = await self._admit(scope, rate_limit)
            if upstream is None:
                raise ServiceUnavailable(f"The {name} service is unavailable")
            upstream_socket = await self._connect(scope, upstream, credentials, identity, client_ip)
        except ApiError as exc:
            await self._deny(scope, send, exc, rate_limit)
            return
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": upstream_socket.subprotocol or credentials.bearer,
                "headers": rate_limit,
            }
        )
        WEBSOCKETS.labels(upstream.name).inc()
        try:
            await self._relay(receive, send, upstream_socket)
        finally:
            WEBSOCKETS.labels(upstream.name).dec()
            await upstream_socket.close()

    async def _admit(
        self, scope: Scope, rate_limit: list[tuple[bytes, bytes]]
    ) -> tuple[Credentials, Identity, str]:
        """The token, who it is and the client's address; the handshake counts against the
        rate limit like a request (a refused token against the client's address)."""
        headers = scope["headers"]
        if sum(1 for name, _ in headers if name == b"authorization") > 1:
            raise ValidationFailed(
                "Only one Authorization header is allowed",
                details={"field": "Authorization", "issue": "repeated header"},
            )
        peer = scope["client"][0] if scope.get("client") else ""
        forwarded_for = dict(headers).get(b"x-forwarded-for")
        client_ip = self._addresses.resolve(
            peer, forwarded_for.decode("latin-1") if forwarded_for else None
        )
        path: str = scope["path"]
        try:
            credentials = _credentials(scope)
            identity = await self._verifier.verify(credentials.token)
        except ApiError as exc:
            if exc.status_code == 401:
                await self._rate_limits.enforce("GET", path, None, client_ip, rate_limit)
            raise
        await self._rate_limits.enforce("GET", path, identity, client_ip, rate_limit)
        return credentials, identity, client_ip

    async def _connect(
        self,
        scope: Scope,
        upstream: Upstream,
        credentials: Credentials,
        identity: Identity,
        client_ip: str,
    ) -> ClientConnection:
        url = upstream.url.replace("http", "ws", 1) + scope["path"]
        query: bytes = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name in FORWARDED
        ]
        peer = scope["client"][0] if scope.get("client") else ""
        scheme = "https" if scope.get("scheme") == "wss" else "http"
        client_scheme = self._addresses.scheme(
            peer, scheme, dict(scope["headers"]).get(b"x-forwarded-proto")
        )
        headers += [
            ("authorization", f"Bearer {credentials.token}"),
            ("x-request-id", current_request_id() or ""),
            ("x-forwarded-for", client_ip),
            ("x-forwarded-proto", client_scheme),
            ("x-user-id", str(identity.user_id)),
            ("x-user-roles", ",".join(identity.roles)),
        ]
        # The gateway's span for this handshake, in the client's trace when it sent one.
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        headers.extend(carrier.items())
        try:
            return await connect(
                url,
                additional_headers=headers,
                subprotocols=[Subprotocol(name) for name in credentials.subprotocols] or None,
                open_timeout=self._connect_timeout,
                compression=None,
                max_size=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in RELAYED_STATUSES:
                log.info("websocket_upstream_refused", upstream=upstream.name, status=status)
                raise _refusal(status, bytes(exc.response.body or b"")) from exc
            log.warning("websocket_upstream_unavailable", upstream=upstream.name, status=status)
            raise ServiceUnavailable(f"The {upstream.name} service is unavailable") from exc
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
    async def _deny(
        scope: Scope, send: Send, exc: ApiError, rate_limit: list[tuple[bytes, bytes]]
    ) -> None:
        """An HTTP answer in the envelope when the server can send one, else a close code."""
        if "websocket.http.response" in scope.get("extensions", {}):
            body = json.dumps(error_body(exc.code, exc.message, exc.details)).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"x-request-id", (current_request_id() or "").encode()),
                *rate_limit,
            ]
            headers.extend(
                (name.lower().encode(), value.encode())
                for name, value in (exc.headers or {}).items()
            )
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": exc.status_code,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await send({"type": "websocket.close", "code": 4000 + exc.status_code})


def _credentials(scope: Scope) -> Credentials:
    """The one token of the handshake, wherever the client put it; two different ones are
    refused, so that the gateway and the service can never act on different tokens."""
    tokens: list[str] = []
    scheme, _, value = (
        dict(scope["headers"]).get(b"authorization", b"").decode("latin-1").partition(" ")
    )
    if scheme.lower() == "bearer":
        tokens.append(value.strip())
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    for parameter in TOKEN_PARAMETERS:
        tokens += (given.strip() for given in query.get(parameter, []))
    offered: list[str] = list(scope.get("subprotocols") or [])
    carried, others, bearer = _subprotocol_tokens(offered)
    tokens += carried
    distinct = {token for token in tokens if token}
    if len(distinct) > 1:
        raise ValidationFailed(
            "Send one access token",
            details={"field": "token", "issue": "different tokens in one handshake"},
        )
    if not distinct:
        raise AuthenticationRequired()
    return Credentials(distinct.pop(), others, bearer)


def _subprotocol_tokens(offered: list[str]) -> tuple[list[str], list[str], str | None]:
    """The tokens among the subprotocols (`bearer.<token>`, or the entry after `bearer`),
    the other subprotocols, and the client's spelling of `bearer` if it offered it."""
    tokens: list[str] = []
    others: list[str] = []
    bearer = None
    expecting_token = False
    for entry in offered:
        after_bearer, expecting_token = expecting_token, False
        if entry.lower().startswith(BEARER_PREFIX):
            tokens.append(entry[len(BEARER_PREFIX) :])
        elif after_bearer and entry.lower() != BEARER:
            tokens.append(entry)
        else:
            if entry.lower() == BEARER:
                bearer, expecting_token = entry, True
            others.append(entry)
    return tokens, others, bearer


def _refusal(status: int, body: bytes) -> UpstreamRefusal:
    """The upstream's refusal in the envelope: its own code and message when it answered in
    the envelope, else the usual code for the status."""
    code, message = CODE_BY_STATUS[status], None
    try:
        error: Any = json.loads(body)["error"]
        if error["code"] in DEFAULT_MESSAGES and isinstance(error["message"], str):
            code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        pass
    return UpstreamRefusal(status, code, message)
