import uuid
from typing import Any

from fastapi import APIRouter, Depends, Response

from services.webhooks import service
from services.webhooks.deps import WebhooksDep
from services.webhooks.models import PENDING, Delivery, Endpoint
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
from shared.deps import PageDep, SessionDep
from shared.pagination import Page
from shared.security import require_admin

router = APIRouter(
    prefix="/api/v1/webhooks", tags=["webhooks"], dependencies=[Depends(require_admin)]
)


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
    body: EndpointCreate, response: Response, session: SessionDep, webhooks: WebhooksDep
) -> Endpoint:
    endpoint = await service.create_endpoint(session, webhooks, body)
    response.headers["Location"] = f"{router.prefix}/endpoints/{endpoint.id}"
    return endpoint


@router.get("/endpoints", response_model=Page[EndpointResponse])
async def list_endpoints(
    page: PageDep, session: SessionDep, enabled: bool | None = None
) -> dict[str, Any]:
    rows, pagination = await service.list_endpoints(session, page, enabled=enabled)
    return {"data": rows, "pagination": pagination}


@router.get("/endpoints/{endpoint_id}", response_model=EndpointWithSecret)
async def get_endpoint(endpoint_id: uuid.UUID, session: SessionDep) -> Endpoint:
    return await service.get_endpoint(session, endpoint_id)


@router.patch("/endpoints/{endpoint_id}", response_model=EndpointResponse)
async def update_endpoint(
    endpoint_id: uuid.UUID, body: EndpointPatch, session: SessionDep, webhooks: WebhooksDep
) -> Endpoint:
    return await service.update_endpoint(session, webhooks, endpoint_id, body)


@router.delete("/endpoints/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: uuid.UUID, session: SessionDep) -> Response:
    await service.delete_endpoint(session, endpoint_id)
    return Response(status_code=204)


@router.post("/endpoints/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
async def rotate_secret(
    endpoint_id: uuid.UUID, session: SessionDep, webhooks: WebhooksDep
) -> Endpoint:
    return await service.rotate_secret(session, webhooks.settings, endpoint_id)


@router.post("/endpoints/{endpoint_id}/test", status_code=202, response_model=DeliveryResponse)
async def send_test(endpoint_id: uuid.UUID, session: SessionDep) -> dict[str, Any]:
    return delivery_view(await service.send_test(session, endpoint_id))


@router.get("/endpoints/{endpoint_id}/deliveries", response_model=Page[DeliveryResponse])
async def list_deliveries(
    endpoint_id: uuid.UUID,
    page: PageDep,
    session: SessionDep,
    status: DeliveryStatus | None = None,
) -> dict[str, Any]:
    rows, pagination = await service.list_deliveries(session, endpoint_id, page, status=status)
    return {"data": [delivery_view(row) for row in rows], "pagination": pagination}


@router.post("/endpoints/{endpoint_id}/recover", status_code=202, response_model=RecoverResponse)
async def recover_failed(
    endpoint_id: uuid.UUID, body: RecoverRequest, session: SessionDep
) -> RecoverResponse:
    recovered = await service.recover_failed(session, endpoint_id, body.since)
    return RecoverResponse(recovered=recovered)


@router.get("/deliveries/{delivery_id}", response_model=DeliveryResponse)
async def get_delivery(delivery_id: uuid.UUID, session: SessionDep) -> dict[str, Any]:
    return delivery_view(await service.get_delivery(session, delivery_id))


@router.post("/deliveries/{delivery_id}/retry", status_code=202, response_model=DeliveryResponse)
async def retry_delivery(delivery_id: uuid.UUID, session: SessionDep) -> dict[str, Any]:
    return delivery_view(await service.retry_delivery(session, delivery_id))


@router.get("/event-types", response_model=Page[EventTypeResponse])
async def list_event_types(page: PageDep, webhooks: WebhooksDep) -> dict[str, Any]:
    items, pagination = service.list_event_types(webhooks.settings, page)
    return {"data": items, "pagination": pagination}
