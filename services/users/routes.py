import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.users.events import record_user_deleted, record_user_updated
from services.users.models import Profile
from services.users.schemas import (
    AdminUserPatch,
    AdminUserUpdate,
    ProfilePatch,
    ProfileResponse,
    ProfileUpdate,
    Role,
)
from shared.db import db_session
from shared.errors import NotFound
from shared.pagination import Page, PageParams, SortOrder, order_by, page_params, paginate
from shared.security import Identity, current_identity, require_admin
from shared.text import Text

router = APIRouter(prefix="/api/v1/users", tags=["users"])

SORTABLE = {
    "created_at": Profile.created_at,
    "name": Profile.name,
    "email": Profile.email,
    "role": Profile.role,
}


async def load_profile(session: AsyncSession, profile_id: uuid.UUID) -> Profile:
    profile = await session.get(Profile, profile_id)
    if profile is None:
        raise NotFound("User not found")
    return profile


async def apply_changes(
    session: AsyncSession, profile: Profile, changes: BaseModel, *, replace: bool
) -> Profile:
    values: dict[str, Any] = changes.model_dump(exclude_unset=not replace)
    changed = []
    for field, value in values.items():
        value = str(value) if field == "avatar_url" and value is not None else value
        if getattr(profile, field) != value:
            setattr(profile, field, value)
            changed.append(field)
    if changed:
        record_user_updated(session, profile, changed)
        await session.commit()
    return profile


@router.get("/me", response_model=ProfileResponse)
async def get_me(
    identity: Identity = Depends(current_identity), session: AsyncSession = Depends(db_session)
) -> Profile:
    return await load_profile(session, identity.user_id)


@router.put("/me", response_model=ProfileResponse)
async def replace_me(
    body: ProfileUpdate,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Profile:
    profile = await load_profile(session, identity.user_id)
    return await apply_changes(session, profile, body, replace=True)


@router.patch("/me", response_model=ProfileResponse)
async def update_me(
    body: ProfilePatch,
    identity: Identity = Depends(current_identity),
    session: AsyncSession = Depends(db_session),
) -> Profile:
    profile = await load_profile(session, identity.user_id)
    return await apply_changes(session, profile, body, replace=False)


@router.get("", response_model=Page[ProfileResponse], dependencies=[Depends(require_admin)])
async def list_users(
    page: PageParams = Depends(page_params),
    role: Role | None = None,
    search: Text | None = Query(None, max_length=200, description="Part of a name or email"),
    sort: str = "created_at",
    order: SortOrder = "desc",
    session: AsyncSession = Depends(db_session),
) -> dict[str, Any]:
    query = select(Profile)
    if role:
        query = query.where(Profile.role == role)
    if search:
        query = query.where(
            or_(
                Profile.name.icontains(search, autoescape=True),
                Profile.email.icontains(search, autoescape=True),
            )
        )
    query = query.order_by(order_by(SORTABLE, sort, order), Profile.id)
    rows, pagination = await paginate(session, query, page)
    return {"data": rows, "pagination": pagination}


@router.get("/{user_id}", response_model=ProfileResponse, dependencies=[Depends(require_admin)])
async def get_user(user_id: uuid.UUID, session: AsyncSession = Depends(db_session)) -> Profile:
    return await load_profile(session, user_id)


@router.put("/{user_id}", response_model=ProfileResponse, dependencies=[Depends(require_admin)])
async def replace_user(
    user_id: uuid.UUID, body: AdminUserUpdate, session: AsyncSession = Depends(db_session)
) -> Profile:
    profile = await load_profile(session, user_id)
    return await apply_changes(session, profile, body, replace=True)


@router.patch("/{user_id}", response_model=ProfileResponse, dependencies=[Depends(require_admin)])
async def update_user(
    user_id: uuid.UUID, body: AdminUserPatch, session: AsyncSession = Depends(db_session)
) -> Profile:
    profile = await load_profile(session, user_id)
    return await apply_changes(session, profile, body, replace=False)


@router.delete("/{user_id}", status_code=204, dependencies=[Depends(require_admin)])
async def delete_user(user_id: uuid.UUID, session: AsyncSession = Depends(db_session)) -> Response:
    profile = await load_profile(session, user_id)
    record_user_deleted(session, profile)
    await session.delete(profile)
    await session.commit()
    return Response(status_code=204)
