"""The reverse proxy: checks the token, cleans the headers, streams both bodies."""

from collections.abc import AsyncIterator

import httpx
from fastapi import Request
from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from gateway.routing import RouteTable, Upstream
from gateway.settings import GatewaySettings
from shared.errors import (
    ApiError,
    AuthenticationRequired,
    NotFound,
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
GATEWAY_OWNED = {b"host", b"content-length", b"x-request-id", b"x-real-ip", b"forwarded"}
RESPONSE_DROPPED = HOP_BY_HOP | {b"x-request-id", b"server", b"date"}


class BodyTooLarge(Exception):
    pass


class Proxy:
    def __init__(
        self, settings: GatewaySettings, routes: RouteTable, verifier: TokenVerifier
    ) -> None:
        self._settings = settings
        self._routes = routes
        self._verifier = verifier
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.upstream_timeout_seconds,
                connect=settings.upstream_connect_timeout_seconds,
            ),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def handle(self, request: Request) -> Response:
        try:
            return await self._forward(request)
        except ApiError as exc:
            return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    async def _forward(self, request: Request) -> Response:
        path = request.url.path
        if any(segment in (".", "..") for segment in path.split("/")):
            raise ValidationFailed("Path must not contain dot segments")
        upstream = self._routes.resolve(path)
        if upstream is None:
            raise NotFound(f"No route for {path}")
        identity = None
        if not self._routes.is_public(request.method, path):
            identity = await self._authenticate(request)
        declared_length = request.headers.get("content-length")
        if declared_length is not None:
            if not declared_length.isdigit():
                raise ValidationFailed("Invalid Content-Length")
            if int(declared_length) > self._settings.max_body_bytes:
                raise PayloadTooLarge(f"Body exceeds {self._settings.max_body_bytes} bytes")
        has_body = declared_length not in (None, "0") or "transfer-encoding" in request.headers
        upstream_request = self.client.build_request(
            request.method,
            self._upstream_url(upstream, request),
            headers=self._upstream_headers(request, identity),
            content=self._limited_body(request) if has_body else None,
        )
        try:
            response = await self.client.send(upstream_request, stream=True)
        except BodyTooLarge as exc:
            raise PayloadTooLarge(f"Body exceeds {self._settings.max_body_bytes} bytes") from exc
        except httpx.TimeoutException as exc:
            log.warning("upstream_timeout", upstream=upstream.name, error=repr(exc))
            raise UpstreamTimeout(f"The {upstream.name} service did not answer in time") from exc
        except httpx.RequestError as exc:
            log.warning("upstream_unavailable", upstream=upstream.name, error=repr(exc))
            raise ServiceUnavailable(f"The {upstream.name} service is unavailable") from exc
        if response.status_code >= 500:
            await response.aclose()
            log.error("upstream_error", upstream=upstream.name, status=response.status_code)
            return self._upstream_failure(upstream, response.status_code)
        headers = [
            (name, value)
            for name, value in response.headers.raw
            if name.lower() not in RESPONSE_DROPPED
        ]
        streamed = StreamingResponse(
            response.aiter_raw(),
            status_code=response.status_code,
            background=BackgroundTask(response.aclose),
        )
        streamed.raw_headers = headers
        return streamed

    async def _authenticate(self, request: Request) -> Identity:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationRequired()
        return await self._verifier.verify(token.strip())

    def _upstream_url(self, upstream: Upstream, request: Request) -> str:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        url = upstream.url + raw_path.decode("latin-1")
        return f"{url}?{query.decode('latin-1')}" if query else url

    def _upstream_headers(
        self, request: Request, identity: Identity | None
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            (name, value)
            for name, value in request.headers.raw
            if name not in HOP_BY_HOP
            and name not in GATEWAY_OWNED
            and not name.startswith(GATEWAY_OWNED_PREFIXES)
        ]
        client_host = request.client.host if request.client else ""
        headers.append((b"x-forwarded-for", client_host.encode()))
        headers.append((b"x-forwarded-proto", request.url.scheme.encode()))
        if "host" in request.headers:
            headers.append((b"x-forwarded-host", request.headers["host"].encode("latin-1")))
        headers.append((b"x-request-id", (current_request_id() or "").encode()))
        if identity is not None:
            headers.append((b"x-user-id", str(identity.user_id).encode()))
            headers.append((b"x-user-roles", ",".join(identity.roles).encode()))
        return headers

    async def _limited_body(self, request: Request) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > self._settings.max_body_bytes:
                raise BodyTooLarge()
            yield chunk

    @staticmethod
    def _upstream_failure(upstream: Upstream, status: int) -> Response:
        if status in (502, 503):
            return error_response(
                503, "SERVICE_UNAVAILABLE", f"The {upstream.name} service is unavailable"
            )
        if status == 504:
            return error_response(504, "UPSTREAM_TIMEOUT")
        return error_response(500, "INTERNAL_ERROR")
