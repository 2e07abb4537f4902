"""The HTTP reverse proxy, as pure ASGI: checks the token and the rate limit, cleans the
headers, and streams both bodies chunk by chunk, never holding one whole.

Upstream calls use aiohttp's client: measured side by side on this path it sustains many
times the request rate of httpx's connection pool, and the proxy is the hot path.
"""

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import aiohttp
from aiohttp.connector import Connection
from aiohttp.tracing import Trace
from opentelemetry import propagate
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from gateway.admission import Admission
from gateway.breaker import CircuitBreaker
from gateway.metrics import (
    LATENCY,
    REQUESTS,
    UPSTREAM_FAILURES,
    UPSTREAM_RETRIES,
    method_label,
)
from gateway.ratelimit import ClientAddress, RateLimits
from gateway.routing import RouteTable, Upstream
from gateway.settings import GatewaySettings
from shared.errors import (
    DEFAULT_MESSAGES,
    ApiError,
    AuthenticationRequired,
    MethodNotAllowed,
    PayloadTooLarge,
    ServiceUnavailable,
    UpstreamTimeout,
    ValidationFailed,
    error_response,
)
from shared.logging import get_logger
from shared.request_id import current_request_id
from shared.security import Identity, TokenVerifier

log = get_logger(__name__)

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
# Headers that only the gateway may set: whatever a client sends under these names is dropped.
GATEWAY_OWNED_PREFIXES = (b"x-user-", b"x-auth-", b"x-authenticated-", b"x-forwarded-")
GATEWAY_OWNED = {
    b"host",
    b"x-request-id",
    b"x-real-ip",
    b"forwarded",
    b"traceparent",
    b"tracestate",
}
RESPONSE_DROPPED = HOP_BY_HOP | {b"x-request-id", b"server", b"date"}
IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
# No answer came: the connection could not be made (in time), or it was closed or reset
# before the answer's first byte. Which requests may be sent again: `_may_send_again`.
NOT_CONNECTED = (
    aiohttp.ClientConnectorError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
)
# A body up to this size (with a Content-Length) is read whole before it is sent, so that
# it can be sent again.
REPLAYABLE_BODY_BYTES = 64 * 1024


# The methods the merged OpenAPI document has for a path; None for a path it does not have
# (or while there is no document, unless told to wait for one).
AllowedMethods = Callable[..., Awaitable[frozenset[str] | None]]

# Streams longer than this (or of unknown length, like SSE) stop when the client leaves.
WATCHED_LENGTH = 1024 * 1024
# Upstream errors that reach the client as they are when their body is the platform's
# envelope (chat's PROVIDER_ERROR, UPSTREAM_TIMEOUT); read up to this size to find out.
RELAYED_ERROR_STATUSES = {502, 504}
RELAYED_ERROR_MAX_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class SentOn:
    """Where one attempt went: `reused` once it took a pooled keep-alive connection (set by
    `PoolConnector`)."""

    reused = False


_sent_on: ContextVar[SentOn | None] = ContextVar("sent_on", default=None)


class PoolConnector(aiohttp.TCPConnector):
    """aiohttp's connector, telling the attempt under way (`_sent_on`) whether the
    connection it hands out has carried a request before."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._handed_out: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        sent_on = _sent_on.get()
        if sent_on is not None and protocol in self._handed_out:
            sent_on.reused = True
        if protocol is not None:
            self._handed_out.add(protocol)
        return connection


class RequestBody:
    """The client's body as an async iterator over ASGI messages, capped at `limit` bytes."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.started = False
        self.finished = False
        self.too_large = False
        self.client_gone = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.started = True
        received = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise ClientGone()
            chunk: bytes = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                self.too_large = True
                raise BodyTooLarge()
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.finished = True
                return

    async def read(self) -> bytes:
        """The whole body (for one that is small and declared so)."""
        try:
            return b"".join([chunk async for chunk in self])
        except BodyTooLarge:
            raise _too_large(self.limit) from None
        except ClientGone:
            raise ValidationFailed("The request body ended early") from None


class HttpProxy:
    def __init__(
        self,
        settings: GatewaySettings,
        routes: RouteTable,
        verifier: TokenVerifier,
        rate_limits: RateLimits,
        admission: Admission,
        session: aiohttp.ClientSession,
        allowed_methods: AllowedMethods | None = None,
        fresh_session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`fresh_session` sends the retries, each on a new connection (by default
        `session`)."""
        self._settings = settings
        self._routes = routes
        self._allowed_methods = allowed_methods
        self._verifier = verifier
        self._rate_limits = rate_limits
        self._admission = admission
        self._session = session
        self._fresh_session = fresh_session or session
        self._addresses = ClientAddress(settings.trusted_proxies)
        self.breakers = {
            name: CircuitBreaker(
                name, settings.breaker_failure_threshold, settings.breaker_reset_seconds
            )
            for name in routes.upstreams
        }
        # No total timeout: sending a big body takes as long as the client takes. aiohttp
        # starts `sock_read` once the request is sent, so it bounds the wait for the first
        # byte of the answer; once the headers are in, it becomes the stream's idle limit.
        self._timeouts = {
            name: aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.upstream_connect_timeout_seconds,
                sock_read=settings.upstream_timeouts.get(name, settings.upstream_timeout_seconds),
            )
            for name in routes.upstreams
        }
        self._stream_idle = settings.upstream_stream_idle_seconds

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, route: str, upstream: Upstream
    ) -> None:
        started = time.perf_counter()
        headers = dict(scope["headers"])
        rate_limit: list[tuple[bytes, bytes]] = []
        status = 500
        try:
            status = await self._forward(scope, receive, send, upstream, headers, rate_limit)
        except ApiError as exc:
            status = exc.status_code
            response = error_response(
                exc.status_code, exc.code, exc.message, exc.details, exc.headers
            )
            response.raw_headers.extend(rate_limit)
            await response(scope, receive, send)
        finally:
            REQUESTS.labels(route, method_label(scope["method"]), str(status), upstream.name).inc()
            LATENCY.labels(route, upstream.name).observe(time.perf_counter() - started)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: Upstream,
        headers: dict[bytes, bytes],
        rate_limit: list[tuple[bytes, bytes]],
    ) -> int:
        method: str = scope["method"]
        path: str = scope["path"]
        if any(segment in (".", "..") for segment in path.split("/")):
            raise ValidationFailed("Path must not contain dot segments")
        if sum(1 for name, _ in scope["headers"] if name == b"authorization") > 1:
            # The gateway and the service must never act on two different tokens.
            raise ValidationFailed(
                "Only one Authorization header is allowed",
                details={"field": "Authorization", "issue": "repeated header"},
            )
        peer = scope["client"][0] if scope.get("client") else ""
        forwarded_for = headers.get(b"x-forwarded-for")
        client_ip = self._addresses.resolve(
            peer, forwarded_for.decode("latin-1") if forwarded_for else None
        )
        identity = None
        if self._routes.is_public(method, path):
            await self._rate_limits.enforce(method, path, None, client_ip, rate_limit)
        else:
            try:
                identity = await self._authenticate(headers)
                await self._admission.admit(method, path, identity, client_ip, rate_limit)
            except ApiError as exc:
                if exc.status_code == 401:
                    # A missing, bad or revoked token costs the client's address its
                    # anonymous budget.
                    await self._rate_limits.enforce(method, path, None, client_ip, rate_limit)
                    # A method no operation of the path has is a 405, not a call for a token.
                    await self._refuse_undocumented_method(method, path, wait=True)
                raise
        await self._refuse_undocumented_method(method, path, wait=False)
        declared_length = headers.get(b"content-length")
        if declared_length is not None and not declared_length.isdigit():
            raise ValidationFailed("Invalid Content-Length")
        body: RequestBody | bytes | None = None
        if declared_length not in (None, b"0") or b"transfer-encoding" in headers:
            limit = self._body_limit(method, path)
            if declared_length is not None and int(declared_length) > limit:
                raise _too_large(limit)
            body = RequestBody(receive, limit)
            if (
                declared_length is not None
                and int(declared_length) <= REPLAYABLE_BODY_BYTES
                and b"transfer-encoding" not in headers
            ):
                body = await body.read()
        breaker = self.breakers[upstream.name]
        permit = breaker.allow()
        if permit is None:
            raise ServiceUnavailable(f"The {upstream.name} service is unavailable")
        try:
            return await self._exchange(
                scope,
                receive,
                send,
                upstream,
                headers,
                body,
                identity,
                client_ip,
                breaker,
                rate_limit,
            )
        finally:
            # Whatever happened (413, the client leaving, an error of ours), a half-open
            # breaker's trial that got no verdict is given back.
            breaker.release(permit)

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: Upstream,
        headers: dict[bytes, bytes],
        body: RequestBody | bytes | None,
        identity: Identity | None,
        client_ip: str,
        breaker: CircuitBreaker,
        rate_limit: list[tuple[bytes, bytes]],
    ) -> int:
        method: str = scope["method"]
        upstream_headers = self._upstream_headers(scope, headers, identity, client_ip)
        response = await self._send(method, upstream, scope, upstream_headers, body, breaker)
        try:
            _use_stream_idle_timeout(response, self._stream_idle)
            if isinstance(body, RequestBody) and body.too_large:
                raise _too_large(body.limit)
            if response.status in RELAYED_ERROR_STATUSES and await self._relay_error(
                scope, receive, send, upstream, response, rate_limit
            ):
                return response.status
            if response.status >= 500:
                log.error("upstream_error", upstream=upstream.name, status=response.status)
                UPSTREAM_FAILURES.labels(upstream.name, "5xx").inc()
                failure = self._upstream_failure(upstream, response.status)
                failure.raw_headers.extend(rate_limit)
                await failure(scope, receive, send)
                return failure.status_code
            response_headers = [
                (name.lower(), value)
                for name, value in response.raw_headers
                if name.lower() not in RESPONSE_DROPPED
            ]
            response_headers.extend(rate_limit)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": response_headers,
                }
            )
            watcher = None
            length = response.content_length
            body_sent = not isinstance(body, RequestBody) or body.finished
            if (length is None or length > WATCHED_LENGTH) and body_sent:
                watcher = asyncio.create_task(_close_on_disconnect(receive, response))
            try:
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except aiohttp.ClientError:
                if watcher is None or not watcher.done():
                    raise
                return response.status
            finally:
                if watcher is not None:
                    watcher.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return response.status
        finally:
            response.release()

    async def _send(
        self,
        method: str,
        upstream: Upstream,
        scope: Scope,
        headers: list[tuple[str, str]],
        body: RequestBody | bytes | None,
        breaker: CircuitBreaker,
    ) -> aiohttp.ClientResponse:
        retries = self._settings.upstream_retries
        url = self._upstream_url(upstream, scope)
        streamed = body if isinstance(body, RequestBody) else None
        session = self._session
        for attempt in range(1 + retries):
            sent_on = SentOn()
            noted = _sent_on.set(sent_on)
            try:
                response = await session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=self._timeouts[upstream.name],
                )
            except NOT_CONNECTED as exc:
                self._raise_if_not_upstreams_fault(streamed, exc)
                if attempt < retries and _may_send_again(method, body, exc, sent_on):
                    log.info(
                        "upstream_retry",
                        upstream=upstream.name,
                        error=repr(exc),
                        reused_connection=sent_on.reused,
                    )
                    UPSTREAM_RETRIES.labels(upstream.name).inc()
                    # Other pooled connections may have been closed with that one.
                    session = self._fresh_session
                    continue
                raise self._unavailable(upstream, breaker, exc) from exc
            except TimeoutError as exc:
                # aiohttp's SocketTimeoutError: no answer within the upstream's timeout.
                self._raise_if_not_upstreams_fault(streamed, exc)
                breaker.failed()
                UPSTREAM_FAILURES.labels(upstream.name, "timeout").inc()
                log.warning("upstream_timeout", upstream=upstream.name, error=repr(exc))
                raise UpstreamTimeout(
                    f"The {upstream.name} service did not answer in time"
                ) from exc
            except (aiohttp.ClientError, BodyTooLarge, ClientGone) as exc:
                self._raise_if_not_upstreams_fault(streamed, exc)
                raise self._unavailable(upstream, breaker, exc) from exc
            finally:
                _sent_on.reset(noted)
            breaker.succeeded()
            return response
        raise AssertionError("unreachable")

    def _raise_if_not_upstreams_fault(self, body: RequestBody | None, exc: BaseException) -> None:
        """A body over the limit or a client that left: the breaker gives no verdict."""
        if body is not None and body.too_large:
            raise _too_large(body.limit) from exc
        if body is not None and body.client_gone:
            raise ValidationFailed("The request body ended early") from exc

    @staticmethod
    def _unavailable(
        upstream: Upstream, breaker: CircuitBreaker, exc: BaseException
    ) -> ServiceUnavailable:
        breaker.failed()
        UPSTREAM_FAILURES.labels(upstream.name, "connect").inc()
        log.warning("upstream_unavailable", upstream=upstream.name, error=repr(exc))
        return ServiceUnavailable(f"The {upstream.name} service is unavailable")

    def _body_limit(self, method: str, path: str) -> int:
        if self._routes.is_upload(method, path):
            return self._settings.max_upload_bytes
        return self._settings.max_body_bytes

    async def _refuse_undocumented_method(self, method: str, path: str, *, wait: bool) -> None:
        """405, with `Allow`, for a method the merged document does not have for a path it
        has. `wait`: fetch the document if there is none yet (only where the answer would
        otherwise be a 401; elsewhere the upstream gives its own 405)."""
        if self._allowed_methods is None:
            return
        allowed = await self._allowed_methods(path, wait=wait)
        if allowed is None or method in allowed or (method == "HEAD" and "GET" in allowed):
            return
        raise MethodNotAllowed(headers={"Allow": ", ".join(sorted(allowed))})

    async def _authenticate(self, headers: dict[bytes, bytes]) -> Identity:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationRequired()
        return await self._verifier.verify_claims(token.strip())

    @staticmethod
    def _upstream_url(upstream: Upstream, scope: Scope) -> str:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        url = upstream.url + raw_path.decode("latin-1")
        return f"{url}?{query.decode('latin-1')}" if query else url

    def _upstream_headers(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        identity: Identity | None,
        client_ip: str,
    ) -> list[tuple[str, str]]:
        forwarded = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name not in HOP_BY_HOP
            and name not in GATEWAY_OWNED
            and not name.startswith(GATEWAY_OWNED_PREFIXES)
        ]
        forwarded.append(("x-forwarded-for", client_ip))
        peer = scope["client"][0] if scope.get("client") else ""
        forwarded.append(
            (
                "x-forwarded-proto",
                self._addresses.scheme(
                    peer, scope.get("scheme", "http"), headers.get(b"x-forwarded-proto")
                ),
            )
        )
        if b"host" in headers:
            forwarded.append(("x-forwarded-host", headers[b"host"].decode("latin-1")))
        forwarded.append(("x-request-id", current_request_id() or ""))
        # The current span is the gateway's own for this request (shared.telemetry), in the
        # client's trace when it sent a `traceparent`.
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        forwarded.extend(carrier.items())
        if identity is not None:
            forwarded.append(("x-user-id", str(identity.user_id)))
            forwarded.append(("x-user-roles", ",".join(identity.roles)))
            forwarded.append(("x-auth-token-use", str(identity.claims.get("token_use", "access"))))
        return forwarded

    @staticmethod
    async def _relay_error(
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: Upstream,
        response: aiohttp.ClientResponse,
        rate_limit: list[tuple[bytes, bytes]],
    ) -> bool:
        """Relays an upstream error answered in the envelope. The service did answer, and
        told the client what failed: neither an upstream failure nor one for its breaker."""
        relayed = await _relayable_error(response)
        if relayed is None:
            return False
        code, body = relayed
        log.warning(
            "upstream_error_relayed", upstream=upstream.name, status=response.status, code=code
        )
        await _relayed_error(response, body, rate_limit)(scope, receive, send)
        return True

    @staticmethod
    def _upstream_failure(upstream: Upstream, status: int) -> JSONResponse:
        if status in (502, 503):
            return error_response(
                503, "SERVICE_UNAVAILABLE", f"The {upstream.name} service is unavailable"
            )
        if status == 504:
            return error_response(504, "UPSTREAM_TIMEOUT")
        return error_response(500, "INTERNAL_ERROR")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Body exceeds {limit} bytes")


def _may_send_again(
    method: str, body: RequestBody | bytes | None, exc: Exception, sent_on: SentOn
) -> bool:
    """After an attempt that got no answer: whether its body can be sent again (none, held
    whole, or not started) and the upstream cannot have acted on it. That is the case of an
    idempotent method, and of a request sent on a pooled keep-alive connection that the
    server closed before the answer's first byte: a server closes those only while they are
    idle (on its keep-alive timeout, or as it shuts down), so it never read the request."""
    if isinstance(body, RequestBody) and body.started:
        return False
    if method in IDEMPOTENT:
        return True
    return sent_on.reused and isinstance(
        exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
    )


async def _relayable_error(response: aiohttp.ClientResponse) -> tuple[str, bytes] | None:
    """The error code and body of an upstream answer in the platform's envelope, read up to
    RELAYED_ERROR_MAX_BYTES; None for anything else (HTML, a traceback, too long, cut)."""
    length = response.content_length
    if length is not None and length > RELAYED_ERROR_MAX_BYTES:
        return None
    body = bytearray()
    try:
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > RELAYED_ERROR_MAX_BYTES:
                return None
    except (aiohttp.ClientError, TimeoutError):
        return None
    code = _envelope_code(bytes(body))
    return None if code is None else (code, bytes(body))


def _envelope_code(body: bytes) -> str | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or document.get("status") != "error":
        return None
    error = document.get("error")
    if not isinstance(error, dict):
        return None
    code, message = error.get("code"), error.get("message")
    if isinstance(code, str) and code in DEFAULT_MESSAGES and isinstance(message, str):
        return code
    return None


def _relayed_error(
    response: aiohttp.ClientResponse, body: bytes, rate_limit: list[tuple[bytes, bytes]]
) -> Response:
    """The upstream's status, headers and body, with the gateway's rate-limit headers (the
    request id is the gateway's, set on the way out)."""
    answer = Response(body, response.status)
    answer.raw_headers = [
        (name.lower(), value)
        for name, value in response.raw_headers
        if name.lower() not in RESPONSE_DROPPED and name.lower() != b"content-length"
    ]
    answer.raw_headers += [(b"content-length", str(len(body)).encode()), *rate_limit]
    return answer


def _use_stream_idle_timeout(response: aiohttp.ClientResponse, idle_seconds: float) -> None:
    """The headers are in: from now on `sock_read` is the pause allowed between two chunks of
    the body, no longer the wait for the first byte."""
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is not None and not response.content.is_eof():
        protocol.read_timeout = idle_seconds
        # Re-armed with the new limit; aiohttp drops it at the end of the body.
        protocol.start_timeout()


async def _close_on_disconnect(receive: Receive, response: aiohttp.ClientResponse) -> None:
    """Closes the upstream response when the client goes away, so that an endless stream
    (SSE) does not keep the upstream busy for nobody."""
    while (await receive())["type"] != "http.disconnect":
        pass
    response.close()
