import math
import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from services.webhooks.catalogue import load_catalogue
from services.webhooks.events import DELIVERIES_DUE, add_message
from services.webhooks.models import FAILED, PENDING, Delivery, Endpoint
from services.webhooks.schemas import (
    DeliveryResponse,
    DeliveryStatus,
    EndpointCreate,
    EndpointPatch,
    EndpointResponse,
    EndpointWithSecret,
    EventTypeResponse,
    RecoverRequest,
    RecoverResponse,
)
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signing import new_secret
from services.webhooks.url_safety import Resolver, UnsafeUrl, parse_networks, resolve_checked
from shared.db import db_session, utcnow
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.pagination import Page, PageParams, Pagination, page_params, paginate
from shared.security import require_admin
from shared.wakeups import flag_work

router = APIRouter(
    prefix="/api/v1/webhooks", tags=["webhooks"], dependencies=[Depends(require_admin)]
)


def settings_of(request: Request) -> WebhooksSettings:
    settings: WebhooksSettings = request.app.state.settings
    return settings


async def checked_url(request: Request, url: str) -> str:
    allowed = parse_networks(settings_of(request).webhook_allowed_networks)
    resolver: Resolver = request.app.state.webhook_resolver
    try:
        await resolve_checked(url, allowed, resolver)
    except UnsafeUrl as exc:
        raise ValidationFailed(
            "The endpoint URL is not allowed", details={"field": "url", "issue": str(exc)}
        ) from exc
    return url


async def load_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> Endpoint:
    endpoint = await session.get(Endpoint, endpoint_id)
    if endpoint is None:
        raise NotFound("Webhook endpoint not found")
    return endpoint


def deliveries_query() -> Select[Delivery]:
    return select(Delivery).options(joinedload(Delivery.message), selectinload(Delivery.attempts))


async def load_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> Delivery:
    delivery = (
        await session.scalars(deliveries_query().where(Delivery.id == delivery_id))
    ).one_or_none()
    if delivery is None:
        raise NotFound("Delivery not found")
    return delivery


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "message_id": delivery.message_id,
        "event_type": delivery.message.event_type,
        "status": delivery.status,
        "attempt_count": delivery.attempt_count,
        "next_attempt_at": delivery.next_attempt_at if delivery.status == PENDING else None,
        "created_at": delivery.created_at,
        "attempts": delivery.attempts,
    }


@router.post("/endpoints", status_code=201, response_model=EndpointWithSecret)
async def create_endpoint(
    body: EndpointCreate,
    request: Request,
    response: Response,
    session: AsyncSession = Depends(db_session),
) -> Endpoint:
    endpoint = Endpoint(
        url=await checked_url(request, body.url),
        event_types=body.event_types,
        description=body.description,
        secret=new_secret(),
    )
    session.add(endpoint)
    await session.commit()
    response.headers["Location"] = f"{router.prefix}/endpoints/{endpoint.id}"
    return endpoint


@router.get("/endpoints", response_model=Page[EndpointResponse])
async def list_endpoints(
    page: PageParams = Depends(page_params),
    enabled: bool | None = None,
    session: AsyncSession = Depends(db_session),
) -> dict[str, Any]:
    query = select(Endpoint).order_by(Endpoint.created_at.desc(), Endpoint.id)
    if enabled is not None:
        query = query.where(Endpoint.enabled == enabled)
    rows, pagination = await paginate(session, query, page)
    return {"data": rows, "pagination": pagination}


@router.get("/endpoints/{endpoint_id}", response_model=EndpointWithSecret)
async def get_endpoint(
    endpoint_id: uuid.UUID, session: AsyncSession = Depends(db_session)
) -> Endpoint:
    return await load_endpoint(session, endpoint_id)


@router.patch("/endpoints/{endpoint_id}", response_model=EndpointResponse)
async def update_endpoint(
    endpoint_id: uuid.UUID,
    body: EndpointPatch,
    request: Request,
    session: AsyncSession = Depends(db_session),
) -> Endpoint:
    endpoint = await load_endpoint(session, endpoint_id)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("url") is not None:
        endpoint.url = await checked_url(request, changes["url"])
    if changes.get("event_types") is not None:
        endpoint.event_types = changes["event_types"]
    if changes.get("description") is not None:
        endpoint.description = changes["description"]
    if changes.get("enabled") is not None and changes["enabled"] != endpoint.enabled:
        endpoint.enabled = changes["enabled"]
        endpoint.failing_since = None
        endpoint.disabled_reason = None if endpoint.enabled else "Disabled by an administrator"
        if endpoint.enabled:
            flag_work(session, DELIVERIES_DUE)
    await session.commit()
    return endpoint


@router.delete("/endpoints/{endpoint_id}", status_code=204)
async def delete_endpoint(
    endpoint_id: uuid.UUID, session: AsyncSession = Depends(db_session)
) -> Response:
    endpoint = await load_endpoint(session, endpoint_id)
    await session.delete(endpoint)
    await session.commit()
    return Response(status_code=204)


@router.post("/endpoints/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
async def rotate_secret(
    endpoint_id: uuid.UUID, request: Request, session: AsyncSession = Depends(db_session)
) -> Endpoint:
    endpoint = await load_endpoint(session, endpoint_id)
    overlap = timedelta(seconds=settings_of(request).webhook_secret_overlap_seconds)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = utcnow() + overlap
    endpoint.secret = new_secret()
    await session.commit()
    return endpoint


@router.post("/endpoints/{endpoint_id}/test", status_code=202, response_model=DeliveryResponse)
async def send_test(
    endpoint_id: uuid.UUID, session: AsyncSession = Depends(db_session)
) -> dict[str, Any]:
    endpoint = await load_endpoint(session, endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it first")
    message_id = str(uuid.uuid4())
    data = {"endpoint_id": str(endpoint.id), "message": "A test event from Lyceum"}
    [delivery] = add_message(session, message_id, "webhook.test", utcnow(), data, [endpoint])
    await session.commit()
    return delivery_view(await load_delivery(session, delivery.id))


@router.get("/endpoints/{endpoint_id}/deliveries", response_model=Page[DeliveryResponse])
async def list_deliveries(
    endpoint_id: uuid.UUID,
    page: PageParams = Depends(page_params),
    status: DeliveryStatus | None = None,
    session: AsyncSession = Depends(db_session),
) -> dict[str, Any]:
    await load_endpoint(session, endpoint_id)
    query = (
        deliveries_query()
        .where(Delivery.endpoint_id == endpoint_id)
        .order_by(Delivery.created_at.desc(), Delivery.id)
    )
    if status is not None:
        query = query.where(Delivery.status == status)
    rows, pagination = await paginate(session, query, page)
    return {"data": [delivery_view(row) for row in rows], "pagination": pagination}


@router.post("/endpoints/{endpoint_id}/recover", status_code=202, response_model=RecoverResponse)
async def recover_failed(
    endpoint_id: uuid.UUID, body: RecoverRequest, session: AsyncSession = Depends(db_session)
) -> RecoverResponse:
    endpoint = await load_endpoint(session, endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it first")
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.endpoint_id == endpoint_id,
            Delivery.status == FAILED,
            Delivery.created_at >= body.since,
        )
        .values(status=PENDING, next_attempt_at=utcnow(), claim_token=None)
        .execution_options(synchronize_session=False)
    )
    flag_work(session, DELIVERIES_DUE)
    await session.commit()
    return RecoverResponse(recovered=result.rowcount)  # type: ignore[attr-defined]


@router.get("/deliveries/{delivery_id}", response_model=DeliveryResponse)
async def get_delivery(
    delivery_id: uuid.UUID, session: AsyncSession = Depends(db_session)
) -> dict[str, Any]:
    return delivery_view(await load_delivery(session, delivery_id))


@router.post("/deliveries/{delivery_id}/retry", status_code=202, response_model=DeliveryResponse)
async def retry_delivery(
    delivery_id: uuid.UUID, session: AsyncSession = Depends(db_session)
) -> dict[str, Any]:
    delivery = await load_delivery(session, delivery_id)
    endpoint = await load_endpoint(session, delivery.endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled; enable it first")
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
    await session.commit()
    return delivery_view(
        (
            await session.scalars(
                deliveries_query()
                .where(Delivery.id == delivery_id)
                .execution_options(populate_existing=True)
            )
        ).one()
    )


@router.get("/event-types", response_model=Page[EventTypeResponse])
async def list_event_types(
    request: Request, page: PageParams = Depends(page_params)
) -> dict[str, Any]:
    catalogue = load_catalogue(settings_of(request).webhook_event_schemas_dir)
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
    return {"data": items[page.offset : page.offset + page.per_page], "pagination": pagination}
