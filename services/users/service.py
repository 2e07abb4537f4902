"""Profiles: what a user may do to their own, and what admins may do to anyone's."""

import uuid

from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.users.events import record_user_deleted, record_user_updated
from services.users.models import Profile
from services.users.schemas import Role, UserSort
from shared.errors import NotFound
from shared.pagination import PageParams, Pagination, SortOrder, order_by, paginate
from shared.updates import assign_changed, requested_values

SORTABLE = {
    "created_at": Profile.created_at,
    "name": Profile.name,
    "email": Profile.email,
    "role": Profile.role,
}


async def get_profile(session: AsyncSession, profile_id: uuid.UUID) -> Profile:
    profile = await session.get(Profile, profile_id)
    if profile is None:
        raise NotFound("User not found")
    return profile


async def update_profile(
    session: AsyncSession, profile_id: uuid.UUID, changes: BaseModel, *, replace: bool
) -> Profile:
    """PUT (`replace`) or PATCH; `user.updated` names the fields that really changed."""
    profile = await get_profile(session, profile_id)
    values = requested_values(changes, replace=replace)
    if values.get("avatar_url") is not None:
        values["avatar_url"] = str(values["avatar_url"])
    changed = assign_changed(profile, values)
    if changed:
        record_user_updated(session, profile, changed)
        await session.flush()  # the answer shows the new `updated_at`
    return profile


async def delete_profile(session: AsyncSession, profile_id: uuid.UUID) -> None:
    profile = await get_profile(session, profile_id)
    record_user_deleted(session, profile)
    await session.delete(profile)


async def list_profiles(
    session: AsyncSession,
    page: PageParams,
    *,
    role: Role | None,
    search: str | None,
    sort: UserSort,
    order: SortOrder,
) -> tuple[list[Profile], Pagination]:
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
    return await paginate(session, query, page)
