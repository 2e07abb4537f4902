"""Prometheus metrics of the webhooks service, in the services' registry (docs/metrics.md)."""

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import case, func, select

from services.webhooks.models import DISABLED_BY_ADMIN, Endpoint
from shared.db import Database
from shared.metrics import REGISTRY

# Outcomes of an attempt, and of a delivery once an attempt is recorded.
SUCCEEDED, FAILED, RETRYING = "succeeded", "failed", "retrying"

DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Delivery attempts recorded, by what became of the delivery: succeeded, retrying (another "
    "attempt is scheduled) or failed (no attempt left)",
    ["outcome"],
    registry=REGISTRY,
)
ATTEMPT_LATENCY = Histogram(
    "webhook_attempt_duration_seconds",
    "Time of one HTTP attempt to an endpoint, by outcome: succeeded (a 2xx answer) or failed "
    "(another status, a timeout, a refused connection or address)",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
ENDPOINTS_DISABLED = Counter(
    "webhook_endpoints_disabled_total",
    "Endpoints the dispatcher disabled after every attempt failed for "
    "WEBHOOK_DISABLE_AFTER_SECONDS",
    registry=REGISTRY,
)
DISABLED_ENDPOINTS = Gauge(
    "webhook_disabled_endpoints",
    "Endpoints disabled now, by reason: failing (disabled by the dispatcher) or admin",
    ["reason"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)

DISABLED_REASONS = ("failing", "admin")


async def count_disabled_endpoints(database: Database) -> None:
    reason = case((Endpoint.disabled_reason == DISABLED_BY_ADMIN, "admin"), else_="failing")
    async with database.reading() as session:
        rows = (
            await session.execute(
                select(reason, func.count()).where(Endpoint.enabled.is_(False)).group_by(reason)
            )
        ).all()
    counts: dict[str, int] = dict.fromkeys(DISABLED_REASONS, 0)
    counts.update((name, count) for name, count in rows)
    for name, count in counts.items():
        DISABLED_ENDPOINTS.labels(name).set(count)
