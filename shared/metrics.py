"""Prometheus metrics of the services, served at each service's `GET /metrics`: what the
event pipeline holds and how it fares.

Every series carries the service it describes, so that the embedded mode (every service
in one process, one registry) still tells them apart. Gauges of stored state (the outbox's
backlog, the depth of a queue) are read when `/metrics` is scraped, by the refreshers that
their owners register here, so a scrape never shows a figure older than itself.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from shared.logging import get_logger

log = get_logger(__name__)

# The services' own registry: the gateway keeps the default one, and in the embedded mode
# both live in one process.
REGISTRY = CollectorRegistry()

OUTBOX_PENDING = Gauge(
    "outbox_pending_events",
    "Outbox rows waiting to be published (neither published nor set aside as failed)",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row waiting to be published; 0 when none waits",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_FAILED = Gauge(
    "outbox_failed_events",
    "Outbox rows set aside after failing to publish OUTBOX_MAX_ATTEMPTS times",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "outbox_published_events",
    "Outbox rows published and confirmed by the broker",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_PUBLISH_FAILURES = Counter(
    "outbox_publish_failures",
    "Failed attempts to publish an outbox row, by reason: invalid_payload, refused, error "
    "(the row's own failure, retried with back-off) or broker_unavailable (every row waits)",
    ["service", "reason"],
    registry=REGISTRY,
)
EVENT_QUEUE_MESSAGES = Gauge(
    "event_queue_messages",
    "Messages ready in a consumed queue, not yet delivered to its consumer (consumer lag)",
    ["service", "queue"],
    registry=REGISTRY,
)
EVENT_DEAD_LETTERS = Gauge(
    "event_dead_letter_messages",
    "Messages in a consumed queue's dead-letter queue",
    ["service", "queue"],
    registry=REGISTRY,
)

REFRESH_TIMEOUT_SECONDS = 2.0

Refresher = Callable[[], Awaitable[None]]
_refreshers: dict[int, Refresher] = {}


def add_refresher(owner: object, refresh: Refresher) -> None:
    """Runs `refresh` before every scrape, until `remove_refresher(owner)`."""
    _refreshers[id(owner)] = refresh


def remove_refresher(owner: object) -> None:
    _refreshers.pop(id(owner), None)


async def refresh() -> None:
    """Brings the gauges of stored state up to date; one that cannot (its database or
    broker is away) keeps its last figures and logs why."""
    refreshers = list(_refreshers.values())
    results = await asyncio.gather(
        *(asyncio.wait_for(refresher(), REFRESH_TIMEOUT_SECONDS) for refresher in refreshers),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, Exception):
            log.warning("metrics_refresh_failed", error=repr(result))


async def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of the services' registry, freshly refreshed."""
    await refresh()
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def service_of_queue(queue: str) -> str:
    """`lyceum.users` -> `users`: a service's queue is `<QUEUE_PREFIX>.<service>`."""
    return queue.rsplit(".", 1)[-1]


def forget_service(service: str) -> None:
    """Drops a stopped relay's gauges, so that they do not linger at their last figures."""
    for gauge in (OUTBOX_PENDING, OUTBOX_OLDEST_PENDING_AGE, OUTBOX_FAILED):
        with contextlib.suppress(KeyError):
            gauge.remove(service)
