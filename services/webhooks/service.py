"""Endpoints and their deliveries as admins manage them: which URLs may receive events,
secret rotation, test pings, and sending again what failed (one delivery, or every failed
one since a moment)."""

import math
import uuid
from datetime import datetime, timedelta

from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from services.webhooks.catalogue import load_catalogue
from services.webhooks.deps import WebhooksCollaborators
from services.webhooks.events import DELIVERIES_DUE, add_message
from services.webhooks.models import DISABLED_BY_ADMIN, FAILED, PENDING, Delivery, Endpoint
from services.webhooks.schemas import (
    DeliveryStatus,
    EndpointCreate,
    EndpointPatch,
    EventTypeResponse,
)
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import new_secret
from services.webhooks.url_safety import UnsafeUrl, parse_networks, resolve_checked
from shared.db import utcnow
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.pagination import PageParams, Pagination, paginate
from shared.updates import assign_changed, requested_values
from shared.wakeups import flag_work


async def checked_url(webhooks: WebhooksCollaborators, url: str) -> str:
    """The URL, if it resolves only to addresses endpoints may target."""
    allowed = parse_networks(webhooks.settings.webhook_allowed_networks)
    try:
        await resolve_checked(url, allowed, webhooks.resolver)
    except UnsafeUrl as exc:
        raise ValidationFailed(
            "The endpoint URL is not allowed", details={"field": "url", "issue": str(exc)}
        ) from exc
    return url


async def get_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> Endpoint:
    endpoint = await session.get(Endpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("Webhook endpoint not found")
    return endpoint


async def enabled_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> Endpoint:
    """An endpoint that may be sent to now: a disabled one must be enabled first."""
    endpoint = await get_endpoint(session, endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it first")
    return endpoint


async def create_endpoint(
    session: AsyncSession, webhooks: WebhooksCollaborators, body: EndpointCreate
) -> Endpoint:
    endpoint = Endpoint(
        url=await checked_url(webhooks, body.url),
        event_types=body.event_types,
        description=body.description,
        secret=new_secret(),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def list_endpoints(
    session: AsyncSession, page: PageParams, *, enabled: bool | None
) -> tuple[list[Endpoint], Pagination]:
    query = select(Endpoint).order_by(Endpoint.created_at.desc(), Endpoint.id)
    if enabled is not None:
        query = query.where(Endpoint.enabled == enabled)
    return await paginate(session, query, page)


async def update_endpoint(
    session: AsyncSession,
    webhooks: WebhooksCollaborators,
    endpoint_id: uuid.UUID,
    changes: EndpointPatch,
) -> Endpoint:
    """PATCH. Enabling or disabling starts the endpoint afresh: it is no longer failing,
    and deliveries that waited for it are due again."""
    endpoint = await get_endpoint(session, endpoint_id)
    values = {
        field: value
        for field, value in requested_values(changes, replace=False).items()
        if value is not None
    }
    if "url" in values:
        values["url"] = await checked_url(webhooks, values["url"])
    enabled = values.pop("enabled", None)
    assign_changed(endpoint, values)
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        endpoint.failing_since = None
        endpoint.disabled_reason = None if enabled else DISABLED_BY_ADMIN
        if enabled:
            flag_work(session, DELIVERIES_DUE)
    await session.flush()
    return endpoint


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    """Its deliveries and their attempt log go with it."""
    endpoint = await get_endpoint(session, endpoint_id)
    await session.delete(endpoint)


async def rotate_secret(
    session: AsyncSession, settings: WebhooksSettings, endpoint_id: uuid.UUID
) -> Endpoint:
    """A new secret; the old one keeps signing next to it for the overlap, so that
    receivers can switch without refusing a delivery."""
    endpoint = await get_endpoint(session, endpoint_id)
    overlap = timedelta(seconds=settings.webhook_secret_overlap_seconds)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = utcnow() + overlap
    endpoint.secret = new_secret()
    await session.flush()
    return endpoint


def deliveries_query() -> Select[Delivery]:
    return select(Delivery).options(joinedload(Delivery.message), selectinload(Delivery.attempts))


async def get_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> Delivery:
    """With its message and attempt log."""
    delivery = (
        await session.scalars(deliveries_query().where(Delivery.id == delivery_id))
    ).one_or_none()
    if delivery is None:
        raise NotFound("Delivery not found")
    return delivery


async def send_test(session: AsyncSession, endpoint_id: uuid.UUID) -> Delivery:
    """A `webhook.test` message to this endpoint alone, delivered like any other."""
    endpoint = await enabled_endpoint(session, endpoint_id)
    message_id = str(uuid.uuid4())
    data = {"endpoint_id": str(endpoint.id), "message": "A test event from Lyceum"}
    [delivery] = add_message(session, message_id, "webhook.test", utcnow(), data, [endpoint])
    await session.flush()
    return await get_delivery(session, delivery.id)


async def list_deliveries(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    page: PageParams,
    *,
    status: DeliveryStatus | None,
) -> tuple[list[Delivery], Pagination]:
    await get_endpoint(session, endpoint_id)
    query = (
        deliveries_query()
        .where(Delivery.endpoint_id == endpoint_id)
        .order_by(Delivery.created_at.desc(), Delivery.id)
    )
    if status is not None:
        query = query.where(Delivery.status == status)
    return await paginate(session, query, page)


async def recover_failed(session: AsyncSession, endpoint_id: uuid.UUID, since: datetime) -> int:
    """Replay: every delivery to the endpoint that failed for good since `since` is due
    again, with the same message (and `webhook-id`). Returns how many."""
    await enabled_endpoint(session, endpoint_id)
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.endpoint_id == endpoint_id,
            Delivery.status == FAILED,
            Delivery.created_at >= since,
        )
        .values(status=PENDING, next_attempt_at=utcnow(), claim_token=None)
        .execution_options(synchronize_session=False)
    )
    flag_work(session, DELIVERIES_DUE)
    recovered: int = result.rowcount  # type: ignore[attr-defined]
    return recovered


async def retry_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> Delivery:
    """The delivery is due again now, whatever its state, unless an attempt is in flight."""
    delivery = await get_delivery(session, delivery_id)
    await enabled_endpoint(session, delivery.endpoint_id)
    now = utcnow()
    # Not while an attempt is in flight (claimed, and its claim has not lapsed): sending
    # again now would deliver twice at once. Checked in the UPDATE itself, so that a
    # worker claiming the delivery meanwhile is seen too.
    retried = await session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            or_(Delivery.claim_token.is_(None), Delivery.next_attempt_at <= now),
        )
        .values(status=PENDING, next_attempt_at=now, claim_token=None)
        .execution_options(synchronize_session=False)
    )
    if retried.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("An attempt of this delivery is in flight; retry once it is logged")
    flag_work(session, DELIVERIES_DUE)
    return (
        await session.scalars(
            deliveries_query()
            .where(Delivery.id == delivery_id)
            .execution_options(populate_existing=True)
        )
    ).one()


def list_event_types(
    settings: WebhooksSettings, page: PageParams
) -> tuple[list[EventTypeResponse], Pagination]:
    """The catalogue: every event type an endpoint can subscribe to, with its schema."""
    catalogue = load_catalogue(settings.webhook_event_schemas_dir)
    items = [
        EventTypeResponse(
            type=event_type,
            title=schema.get("title", event_type),
            description=schema.get("description", ""),
            schema_=schema,
        )
        for event_type, schema in catalogue.items()
    ]
    total = len(items)
    pagination = Pagination(
        page=page.page,
        per_page=page.per_page,
        total=total,
        pages=math.ceil(total / page.per_page) if total else 0,
    )
    return items[page.offset : page.offset + page.per_page], pagination
