"""Prometheus metrics of the gateway, in the default registry. With several workers,
PROMETHEUS_MULTIPROC_DIR is set before they start (`shared.service.serve`) and `/metrics`
sums every worker's figures."""

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import KNOWN_METHODS, UNMATCHED, exposition, method_label

__all__ = ["KNOWN_METHODS", "UNMATCHED", "method_label", "render"]

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


def render() -> tuple[bytes, str]:
    return exposition(prometheus_client.REGISTRY)
