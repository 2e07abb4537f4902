"""Pure ASGI middleware of the gateway: the dispatch to the proxies, and security headers."""

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge import Edge
from gateway.metrics import REQUESTS, UNMATCHED, method_label
from gateway.ratelimit import ClientAddress
from gateway.settings import GatewaySettings


class ProxyMiddleware:
    """Requests on a proxied route go to the upstream; the rest to the gateway's own routes."""

    def __init__(self, app: ASGIApp, edge: Edge) -> None:
        self.app = app
        self.edge = edge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            matched = self.edge.routes.match(scope["path"])
            if matched is not None:
                await self.edge.http(scope, receive, send, *matched)
                return
            await self.app(scope, receive, _counting_unmatched(scope, send))
            return
        elif scope["type"] == "websocket":
            target = self.edge.routes.resolve_websocket(scope["path"])
            if target is not None:
                await self.edge.websockets(scope, receive, send, *target)
                return
        await self.app(scope, receive, send)


def _counting_unmatched(scope: Scope, send: Send) -> Send:
    """The gateway's own 404 and 405 answers count in gateway_requests_total, with the route
    label "unmatched" (the path itself would let clients grow the series without bound)."""

    async def counting_send(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] in (404, 405):
            REQUESTS.labels(
                UNMATCHED, method_label(scope["method"]), str(message["status"]), "gateway"
            ).inc()
        await send(message)

    return counting_send


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.hsts = f"max-age={settings.hsts_seconds}; includeSubDomains"
        self.hsts_enabled = settings.hsts_seconds > 0
        self.proxies = ClientAddress(settings.trusted_proxies)
        self.enabled = settings.security_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        peer = scope["client"][0] if scope.get("client") else ""
        scheme = self.proxies.scheme(
            peer, scope.get("scheme", "http"), dict(scope["headers"]).get(b"x-forwarded-proto")
        )
        behind_tls = scheme == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("referrer-policy", "no-referrer")
                headers.setdefault("x-frame-options", "DENY")
                if behind_tls and self.hsts_enabled:
                    headers.setdefault("strict-transport-security", self.hsts)
            await send(message)

        await self.app(scope, receive, send_with_headers)
