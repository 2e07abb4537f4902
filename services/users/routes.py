import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from services.users import service
from services.users.models import Profile
from services.users.schemas import (
    AdminUserPatch,
    AdminUserUpdate,
    ProfilePatch,
    ProfileResponse,
    ProfileUpdate,
    Role,
    UserSort,
)
from shared.deps import CurrentIdentity, PageDep, SessionDep
from shared.pagination import Page, SortOrder
from shared.security import require_admin
from shared.text import Text

router = APIRouter(prefix="/api/v1/users", tags=["users"])
admin_only = [Depends(require_admin)]


@router.get("/me", response_model=ProfileResponse)
async def get_me(identity: CurrentIdentity, session: SessionDep) -> Profile:
    return await service.get_profile(session, identity.user_id)


@router.put("/me", response_model=ProfileResponse)
async def replace_me(
    body: ProfileUpdate, identity: CurrentIdentity, session: SessionDep
) -> Profile:
    return await service.update_profile(session, identity.user_id, body, replace=True)


@router.patch("/me", response_model=ProfileResponse)
async def update_me(body: ProfilePatch, identity: CurrentIdentity, session: SessionDep) -> Profile:
    return await service.update_profile(session, identity.user_id, body, replace=False)


@router.get("", response_model=Page[ProfileResponse], dependencies=admin_only)
async def list_users(
    page: PageDep,
    session: SessionDep,
    role: Role | None = None,
    search: Text | None = Query(None, max_length=200, description="Part of a name or email"),
    sort: UserSort = "created_at",
    order: SortOrder = "desc",
) -> dict[str, Any]:
    rows, pagination = await service.list_profiles(
        session, page, role=role, search=search, sort=sort, order=order
    )
    return {"data": rows, "pagination": pagination}


@router.get("/{user_id}", response_model=ProfileResponse, dependencies=admin_only)
async def get_user(user_id: uuid.UUID, session: SessionDep) -> Profile:
    return await service.get_profile(session, user_id)


@router.put("/{user_id}", response_model=ProfileResponse, dependencies=admin_only)
async def replace_user(user_id: uuid.UUID, body: AdminUserUpdate, session: SessionDep) -> Profile:
    return await service.update_profile(session, user_id, body, replace=True)


@router.patch("/{user_id}", response_model=ProfileResponse, dependencies=admin_only)
async def update_user(user_id: uuid.UUID, body: AdminUserPatch, session: SessionDep) -> Profile:
    return await service.update_profile(session, user_id, body, replace=False)


@router.delete("/{user_id}", status_code=204, dependencies=admin_only)
async def delete_user(user_id: uuid.UUID, session: SessionDep) -> Response:
    await service.delete_profile(session, user_id)
    return Response(status_code=204)
