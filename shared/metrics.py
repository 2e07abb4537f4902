"""Prometheus metrics of the services, served at each service's `GET /metrics`: what the
event pipeline holds and how it fares.

Every series carries the service it describes, so that the embedded mode (every service
in one process, one registry) still tells them apart. Gauges of stored state (the outbox's
backlog, the depth of a queue, readiness, the database pool) are read when `/metrics` is
scraped, by the refreshers that their owners register here, so a scrape never shows a
figure older than itself.

A process with several workers sets PROMETHEUS_MULTIPROC_DIR before they start
(`share_between_workers`): each worker then writes its figures to files there, and
`/metrics` on any worker shows them all, counters summed. docs/metrics.md lists every
metric.
"""

import asyncio
import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy.pool import Pool, QueuePool

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
    multiprocess_mode="mostrecent",
)
OUTBOX_OLDEST_PENDING_AGE = Gauge(
    "outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row waiting to be published; 0 when none waits",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
OUTBOX_FAILED = Gauge(
    "outbox_failed_events",
    "Outbox rows set aside after failing to publish OUTBOX_MAX_ATTEMPTS times",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
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
    multiprocess_mode="mostrecent",
)
EVENT_DEAD_LETTERS = Gauge(
    "event_dead_letter_messages",
    "Messages in a consumed queue's dead-letter queue",
    ["service", "queue"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "Requests answered by the service, by route template (`unmatched` for no route), method "
    "and status code",
    ["service", "route", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival until its answer starts (status and headers sent); a "
    "streamed body's duration is not part of it",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)

SERVICE_READY = Gauge(
    "service_ready",
    "1 while every readiness check of the service passes (as GET /ready answers 200), else 0",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
READINESS_CHECK = Gauge(
    "service_readiness_check",
    "1 while one readiness check of the service (database, event_bus, ...) passes, else 0",
    ["service", "check"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

# With several workers each has its own pool: these are summed over the live workers, each
# worker's figures as of the last scrape it answered.
DB_POOL_CHECKED_OUT = Gauge(
    "db_pool_checked_out_connections",
    "Database connections in use, checked out of the service's pool",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DB_POOL_SIZE = Gauge(
    "db_pool_size",
    "Connections the service's database pool keeps open (its pool_size)",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DB_POOL_OVERFLOW = Gauge(
    "db_pool_overflow_connections",
    "Connections open beyond the pool's size (up to its max_overflow)",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "db_pool_max_connections",
    "The most connections the service's pool opens (pool_size + max_overflow); a request "
    "waits for a connection beyond it",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)

# Label values for methods: anything else a client makes up counts as OTHER, so that made-up
# methods cannot grow the number of series without bound.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# The route label of requests that match no route (404s, and 405s of the gateway).
UNMATCHED = "unmatched"


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


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
    return exposition(REGISTRY)


MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIRECTORY))


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """`registry` in the text format; in multiprocess mode, what every worker of the
    process wrote instead (whichever registry its metrics belong to)."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def share_between_workers(workers: int) -> None:
    """Before a server starts several worker processes: a fresh PROMETHEUS_MULTIPROC_DIR,
    which they inherit, removed when this process exits. One already set is kept as it is
    (its owner empties it between runs), as is a single process's in-memory mode."""
    if workers <= 1 or multiprocess_enabled():
        return
    directory = tempfile.mkdtemp(prefix="lyceum-metrics-")
    os.environ[MULTIPROCESS_DIRECTORY] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def worker_exiting() -> None:
    """Drops this worker's share of the `live...` gauges (in flight, pool use), which would
    otherwise still count once it is gone."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


# A worker started with PROMETHEUS_MULTIPROC_DIR set (by its server, before it started) drops
# its live gauges when it exits.
if multiprocess_enabled():
    atexit.register(worker_exiting)


def record_pools(service: str, pools: list[Pool]) -> None:
    """The figures of the service's pools now, added up; a pool that keeps no connections
    (SQLite in memory) has none."""
    queues = [pool for pool in pools if isinstance(pool, QueuePool)]
    if not queues:
        return
    DB_POOL_CHECKED_OUT.labels(service).set(sum(pool.checkedout() for pool in queues))
    DB_POOL_SIZE.labels(service).set(sum(pool.size() for pool in queues))
    DB_POOL_OVERFLOW.labels(service).set(sum(max(pool.overflow(), 0) for pool in queues))
    DB_POOL_MAX.labels(service).set(sum(pool.size() + pool._max_overflow for pool in queues))


def service_of_queue(queue: str) -> str:
    """`lyceum.users` -> `users`: a service's queue is `<QUEUE_PREFIX>.<service>`."""
    return queue.rsplit(".", 1)[-1]


def forget_service(service: str) -> None:
    """Drops a stopped relay's gauges, so that they do not linger at their last figures."""
    for gauge in (OUTBOX_PENDING, OUTBOX_OLDEST_PENDING_AGE, OUTBOX_FAILED):
        with contextlib.suppress(KeyError):
            gauge.remove(service)
