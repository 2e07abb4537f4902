"""Every domain event becomes one message and a pending delivery per matching endpoint;
webhooks itself publishes `webhook.endpoint.disabled`."""

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.webhooks import statements
from services.webhooks.filters import matches_any
from services.webhooks.models import PENDING, Delivery, Endpoint, Message, OutboxEvent
from shared.db import is_sqlite, utcnow
from shared.events.cloudevents import CloudEvent
from shared.events.consumer import DomainHandler
from shared.events.outbox import Outbox
from shared.telemetry import current_traceparent
from shared.wakeups import flag_work

if TYPE_CHECKING:
    # For annotations only: the collaborators build the dispatcher, which imports this module.
    from services.webhooks.deps import WebhooksCollaborators

outbox = Outbox(OutboxEvent, source="lyceum/webhooks")

FAN_OUT_ON_POSTGRESQL = statements.fan_out_on_postgresql()

# Set on a session that created due deliveries, so that its commit wakes the dispatcher.
DELIVERIES_DUE = "webhook_deliveries_due"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def webhook_body(event_type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": rfc3339(timestamp), "data": data}, separators=(",", ":")
    )


def add_message(
    session: AsyncSession,
    message_id: str,
    event_type: str,
    timestamp: datetime,
    data: dict[str, Any],
    endpoints: list[Endpoint],
) -> list[Delivery]:
    session.add(
        Message(
            id=message_id,
            event_type=event_type,
            body=webhook_body(event_type, timestamp, data),
            traceparent=current_traceparent(),
        )
    )
    now = utcnow()
    deliveries = [
        Delivery(id=uuid.uuid4(), message_id=message_id, endpoint_id=e.id, next_attempt_at=now)
        for e in endpoints
    ]
    session.add_all(deliveries)
    flag_work(session, DELIVERIES_DUE)
    return deliveries


async def fan_out(
    session: AsyncSession, event: CloudEvent, _webhooks: "WebhooksCollaborators"
) -> None:
    """Rows rather than ORM objects: an event may go to many endpoints."""
    enabled = await session.execute(
        select(Endpoint.id, Endpoint.event_types).where(Endpoint.enabled)
    )
    matching = [id_ for id_, filters in enabled if matches_any(filters, event.type)]
    if not matching:
        return
    body = webhook_body(event.type, event.time, event.data)
    now = utcnow()
    # The consumer's span is current: each delivery attempt is its child.
    await session.execute(
        insert(Message).values(
            id=event.id,
            event_type=event.type,
            body=body,
            created_at=now,
            traceparent=current_traceparent(),
        )
    )
    if is_sqlite(session):
        await session.execute(
            insert(Delivery),
            [
                {
                    "id": uuid.uuid4(),
                    "message_id": event.id,
                    "endpoint_id": endpoint_id,
                    "status": PENDING,
                    "attempt_count": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for endpoint_id in matching
            ],
        )
    else:
        values = {"message_id": event.id, "endpoint_ids": matching, "now": now}
        # On the session's connection: a statement, not an ORM bulk insert of `values`.
        await (await session.connection()).execute(FAN_OUT_ON_POSTGRESQL, values)
    flag_work(session, DELIVERIES_DUE)


def record_endpoint_disabled(session: AsyncSession, endpoint: Endpoint, reason: str) -> None:
    data = {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "reason": reason,
        "failing_since": rfc3339(endpoint.failing_since or utcnow()),
    }
    outbox.add(session, "webhook.endpoint.disabled", f"webhooks/endpoints/{endpoint.id}", data)


handlers: dict[str, DomainHandler["WebhooksCollaborators"]] = {"#": fan_out}
