"""Requests, errors and latency of a service by route: `http_requests_total` and
`http_request_duration_seconds` (shared/metrics.py).

The route label is the matched route's template (`/api/v1/users/{user_id}`), which the
router leaves in the scope; a request that matches no route counts as `unmatched`, so that
made-up paths cannot grow the number of series. Pure ASGI, and each label combination's
series is looked up once, then kept."""

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS, UNMATCHED, method_label

# Answered when the application raised before it started any answer (the error handler
# outside this middleware turns that into a 500).
UNANSWERED_STATUS = 500


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._latencies: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        elapsed = 0.0

        async def send_timed(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            if not status:
                status = UNANSWERED_STATUS
                elapsed = time.perf_counter() - started
            self._record(scope, status, elapsed)

    def _record(self, scope: Scope, status: int, elapsed: float) -> None:
        route = scope.get("route")
        template: str = getattr(route, "path_format", None) or UNMATCHED
        method = method_label(scope["method"])
        key = (template, method, status)
        requests = self._requests.get(key)
        if requests is None:
            requests = HTTP_REQUESTS.labels(self.service, template, method, str(status))
            self._requests[key] = requests
        requests.inc()
        latency = self._latencies.get((template, method))
        if latency is None:
            latency = HTTP_LATENCY.labels(self.service, template, method)
            self._latencies[(template, method)] = latency
        latency.observe(elapsed)
