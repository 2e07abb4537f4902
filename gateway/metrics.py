"""Prometheus metrics of the gateway. With several workers, PROMETHEUS_MULTIPROC_DIR is set
before they start (gateway/__main__.py) and `/metrics` sums every worker's figures."""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests answered by the gateway",
    ["route", "method", "status", "upstream"],
)
LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Time to answer a proxied request, streaming its body included",
    ["route", "upstream"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMIT_REFUSALS = Counter(
    "gateway_rate_limit_refusals_total", "Requests refused with 429", ["policy"]
)
RATE_LIMIT_STORAGE_ERRORS = Counter(
    "gateway_rate_limit_storage_errors_total",
    "Rate-limit checks that could not reach their storage (answered per RATE_LIMIT_FAIL_OPEN)",
)
REVOCATION_STORE_ERRORS = Counter(
    "gateway_revocation_store_errors_total",
    "Token revocation lookups the store could not answer: unreachable (answered per "
    "REVOCATION_FAIL_OPEN) or without its marker while auth refills it (503)",
)
UPSTREAM_FAILURES = Counter(
    "gateway_upstream_failures_total",
    "Upstream connection failures, timeouts and 5xx answers",
    ["upstream", "kind"],
)
UPSTREAM_RETRIES = Counter(
    "gateway_upstream_retries_total",
    "Idempotent requests sent again after their connection failed before any answer",
    ["upstream"],
)
BREAKER_OPEN = Gauge(
    "gateway_circuit_breaker_open",
    "1 while the upstream's circuit breaker is open (failing fast), else 0",
    ["upstream"],
    multiprocess_mode="livemax",
)
WEBSOCKETS = Gauge(
    "gateway_websocket_connections",
    "WebSocket connections being proxied",
    ["upstream"],
    multiprocess_mode="livesum",
)


# Label values for methods: anything else a client makes up counts as OTHER, so that made-up
# methods cannot grow the number of series without bound.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# The route label of requests that match no route (the gateway's own 404 and 405).
UNMATCHED = "unmatched"


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
