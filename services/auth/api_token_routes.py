"""`/api/v1/auth/tokens`: API tokens for machine clients, listed and revoked by their owner
(or an admin); the value is returned once, when the token is created."""

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import api_tokens
from services.auth.models import Account, ApiToken
from shared.db import db_session
from shared.errors import NotFound, PermissionDenied
from shared.pagination import Page, PageParams, page_params, paginate
from shared.security import Identity, current_identity
from shared.text import Text

router = APIRouter(prefix="/api/v1/auth/tokens", tags=["api tokens"])


class ApiTokenCreate(BaseModel):
    name: Text = Field(min_length=1, max_length=100, description="What the token is for")
    expires_in_days: int = Field(90, ge=1, le=api_tokens.MAX_TTL_DAYS)

    @field_validator("name")
    @classmethod
    def strip_name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("Name must not be blank")
        return value


class ApiTokenResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    account_id: uuid.UUID
    name: str
    roles: list[str]
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    @field_validator("roles", mode="before")
    @classmethod
    def split_roles(cls, value: object) -> object:
        return value.split(",") if isinstance(value, str) else value


class ApiTokenCreated(ApiTokenResponse):
    token: str = Field(description="Send as `Authorization: Bearer <token>`; shown only once")


def login_identity(identity: Identity = Depends(current_identity)) -> Identity:
    """Managing API tokens takes a login's access token, not an API token."""
    if identity.claims.get("token_use") == api_tokens.TOKEN_USE:
        raise PermissionDenied("API tokens cannot manage API tokens")
    return identity


async def owned_token(
    token_id: uuid.UUID,
    identity: Identity = Depends(login_identity),
    session: AsyncSession = Depends(db_session),
) -> ApiToken:
    record = await session.get(ApiToken, token_id)
    if record is None or (record.account_id != identity.user_id and not identity.is_admin):
        raise NotFound("API token not found")
    return record


@router.post("", status_code=201, response_model=ApiTokenCreated)
async def create_api_token(
    body: ApiTokenCreate,
    request: Request,
    response: Response,
    identity: Identity = Depends(login_identity),
    session: AsyncSession = Depends(db_session),
) -> ApiTokenCreated:
    account = await session.get(Account, identity.user_id)
    if account is None or not account.is_active:
        raise PermissionDenied("Account is disabled")
    record, value = await api_tokens.issue(
        session,
        request.app.state.settings,
        request.app.state.key_ring,
        account,
        body.name,
        body.expires_in_days,
    )
    await session.commit()
    response.headers["Location"] = f"/api/v1/auth/tokens/{record.id}"
    return ApiTokenCreated(**ApiTokenResponse.model_validate(record).model_dump(), token=value)


@router.get("", response_model=Page[ApiTokenResponse])
async def list_api_tokens(
    account_id: uuid.UUID | None = Query(None, description="Admins only: another account's"),
    params: PageParams = Depends(page_params),
    identity: Identity = Depends(login_identity),
    session: AsyncSession = Depends(db_session),
) -> Page[ApiTokenResponse]:
    if account_id is not None and account_id != identity.user_id and not identity.is_admin:
        raise PermissionDenied()
    query = (
        select(ApiToken)
        .where(ApiToken.account_id == (account_id or identity.user_id))
        .order_by(ApiToken.created_at.desc())
    )
    rows, pagination = await paginate(session, query, params)
    return Page(data=[ApiTokenResponse.model_validate(row) for row in rows], pagination=pagination)


@router.get("/{token_id}", response_model=ApiTokenResponse)
async def get_api_token(record: ApiToken = Depends(owned_token)) -> ApiToken:
    return record


@router.delete("/{token_id}", status_code=204)
async def revoke_api_token(
    request: Request,
    record: ApiToken = Depends(owned_token),
    session: AsyncSession = Depends(db_session),
) -> Response:
    await api_tokens.revoke(record, request.app.state.revocations)
    await session.commit()
    return Response(status_code=204)
