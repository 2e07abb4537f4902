"""Profiles: what a user may do to their own, and what admins may do to anyone's; and each
user's preferences.

Auth owns credentials, users owns profiles: an account is created by auth (an admin's
request goes there first, with the admin's own token) and its profile here, from auth's
answer or from its `user.created`, whichever comes first. An email change is asked of auth
too; the profile's `email` follows when its owner confirms (`user.email_changed`)."""

import uuid
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.users.accounts import AuthClient
from services.users.events import ensure_profile, record_user_deleted, record_user_updated
from services.users.models import Preferences, Profile
from services.users.preferences import DEFAULTS
from services.users.schemas import Role, UserCreate, UserSort
from shared.db import begin_writing, is_sqlite
from shared.errors import NotFound, ValidationFailed
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


async def create_user(
    session: AsyncSession, auth: AuthClient, token: str, request: UserCreate
) -> Profile:
    """Auth creates the account (with the admin's token), then its profile is made here
    at once, so that the answer is the profile. Auth refusing leaves nothing behind."""
    account = await auth.create_account(
        token, request.email, request.name, request.role, request.password
    )
    return await ensure_profile(
        session,
        account.id,
        email=account.email,
        name=account.name,
        role=account.role,
        email_verified=account.email_verified,
        is_active=account.is_active,
    )


async def update_profile(
    session: AsyncSession, profile_id: uuid.UUID, changes: BaseModel, *, replace: bool
) -> Profile:
    """An admin's PUT (`replace`) or PATCH; `user.updated` names the fields that really
    changed."""
    profile = await get_profile(session, profile_id)
    return await _apply(session, profile, requested_values(changes, replace=replace))


async def update_own_profile(
    session: AsyncSession,
    auth: AuthClient,
    token: str,
    profile_id: uuid.UUID,
    changes: BaseModel,
    *,
    replace: bool,
) -> Profile:
    """The owner's PUT or PATCH. A new `email` is asked of auth first, with the current
    password; only if auth accepts it are the other fields changed, and the address waits
    in `pending_email` until its owner confirms it."""
    profile = await get_profile(session, profile_id)
    values = requested_values(changes, replace=replace, kept_unless_given=("name",))
    new_email = values.pop("email", None)
    current_password = values.pop("current_password", None)
    if new_email is not None and new_email != profile.email:
        if current_password is None:
            raise ValidationFailed(
                details={
                    "field": "current_password",
                    "issue": "The current password is required to change the email",
                }
            )
        accepted = await auth.request_email_change(token, new_email, current_password)
        profile.pending_email = accepted.pending_email
    return await _apply(session, profile, values)


async def _apply(session: AsyncSession, profile: Profile, values: dict[str, Any]) -> Profile:
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


async def get_preferences(session: AsyncSession, user_id: uuid.UUID) -> dict[str, Any]:
    await get_profile(session, user_id)
    stored = await session.get(Preferences, user_id)
    return _with_defaults(stored.data if stored is not None else {})


async def set_preferences(
    session: AsyncSession, user_id: uuid.UUID, changes: BaseModel, *, replace: bool
) -> dict[str, Any]:
    """PUT (`replace`: what is left out goes back to its default) or PATCH (merges). Only
    the preferences given are stored, so the others follow the defaults."""
    await begin_writing(session)
    await get_profile(session, user_id)
    insert = sqlite_insert if is_sqlite(session) else postgresql_insert
    await session.execute(
        insert(Preferences).values(user_id=user_id, data={}).on_conflict_do_nothing()
    )
    stored = await session.get(Preferences, user_id, with_for_update=True, populate_existing=True)
    assert stored is not None
    given = changes.model_dump(exclude_unset=True)
    stored.data = given if replace else {**_known(stored.data), **given}
    await session.flush()
    return _with_defaults(stored.data)


def _known(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key in DEFAULTS}


def _with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    return {**DEFAULTS, **_known(data)}
