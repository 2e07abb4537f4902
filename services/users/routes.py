import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Response

from services.users import service
from services.users.deps import AccessToken, UsersDep
from services.users.models import Profile
from services.users.schemas import (
    AdminUserPatch,
    AdminUserUpdate,
    PreferencesPatch,
    PreferencesResponse,
    PreferencesUpdate,
    ProfilePatch,
    ProfileResponse,
    ProfileUpdate,
    Role,
    UserCreate,
    UserSort,
)
from shared.deps import CurrentIdentity, PageDep, SessionDep
from shared.openapi import error_responses
from shared.pagination import Page, SortOrder
from shared.security import require_admin
from shared.text import Text

router = APIRouter(prefix="/api/v1/users", tags=["users"])
admin_only = [Depends(require_admin)]

# What a request that users forwards to auth may get besides the defaults: auth's refusals
# as auth gave them, and auth failing.
AUTH_ERRORS: dict[int | str, dict[str, Any]] = error_responses(429, 502, 504) | {
    502: {"description": "SERVICE_UNAVAILABLE: the auth service could not be reached or failed"},
    504: {"description": "UPSTREAM_TIMEOUT: the auth service did not answer in time"},
}
EMAIL_CHANGE_ERRORS = AUTH_ERRORS | {
    400: {
        "description": "VALIDATION_ERROR: a field is not valid (`details` names it), or "
        "`email` changes without `current_password`; INVALID_CURRENT_PASSWORD: "
        "`current_password` is not the account's password"
    },
    409: {"description": "CONFLICT: the new email belongs to another account"},
}
CREATE_ERRORS = AUTH_ERRORS | {
    409: {"description": "CONFLICT: an account with this email exists"},
}


@router.get("/me", response_model=ProfileResponse)
async def get_me(identity: CurrentIdentity, session: SessionDep) -> Profile:
    return await service.get_profile(session, identity.user_id)


@router.put("/me", response_model=ProfileResponse, responses=EMAIL_CHANGE_ERRORS)
async def replace_me(
    body: ProfileUpdate,
    identity: CurrentIdentity,
    token: AccessToken,
    session: SessionDep,
    users: UsersDep,
) -> Profile:
    """Replaces the profile. A new `email` (with `current_password`) is mailed a
    confirmation link by auth and shows as `pending_email` until confirmed; the other
    fields change only if auth accepted it."""
    return await service.update_own_profile(
        session, users.auth, token, identity.user_id, body, replace=True
    )


@router.patch("/me", response_model=ProfileResponse, responses=EMAIL_CHANGE_ERRORS)
async def update_me(
    body: ProfilePatch,
    identity: CurrentIdentity,
    token: AccessToken,
    session: SessionDep,
    users: UsersDep,
) -> Profile:
    """Changes the fields given; `email` as in PUT."""
    return await service.update_own_profile(
        session, users.auth, token, identity.user_id, body, replace=False
    )


@router.get("/me/preferences", response_model=PreferencesResponse)
async def get_my_preferences(identity: CurrentIdentity, session: SessionDep) -> dict[str, Any]:
    """Every preference: the user's own where they set one, otherwise its default."""
    return await service.get_preferences(session, identity.user_id)


@router.put("/me/preferences", response_model=PreferencesResponse)
async def replace_my_preferences(
    body: PreferencesUpdate, identity: CurrentIdentity, session: SessionDep
) -> dict[str, Any]:
    """Replaces the preferences: those left out go back to their defaults."""
    return await service.set_preferences(session, identity.user_id, body, replace=True)


@router.patch("/me/preferences", response_model=PreferencesResponse)
async def update_my_preferences(
    body: PreferencesPatch, identity: CurrentIdentity, session: SessionDep
) -> dict[str, Any]:
    """Changes the preferences given and keeps the others."""
    return await service.set_preferences(session, identity.user_id, body, replace=False)


@router.post(
    "",
    status_code=201,
    response_model=ProfileResponse,
    dependencies=admin_only,
    responses=CREATE_ERRORS,
)
async def create_user(
    body: UserCreate,
    response: Response,
    token: AccessToken,
    session: SessionDep,
    users: UsersDep,
) -> Profile:
    """Creates an account (in auth, with the admin's token) and its profile. Without a
    `password`, auth mails the new user a link to set one."""
    profile = await service.create_user(session, users.auth, token, body)
    response.headers["Location"] = f"/api/v1/users/{profile.id}"
    return profile


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
    """Replaces the profile; an account's email is changed only by its owner."""
    return await service.update_profile(session, user_id, body, replace=True)


@router.patch("/{user_id}", response_model=ProfileResponse, dependencies=admin_only)
async def update_user(user_id: uuid.UUID, body: AdminUserPatch, session: SessionDep) -> Profile:
    """Changes the fields given; an account's email is changed only by its owner."""
    return await service.update_profile(session, user_id, body, replace=False)


@router.delete("/{user_id}", status_code=204, dependencies=admin_only)
async def delete_user(user_id: uuid.UUID, session: SessionDep) -> Response:
    await service.delete_profile(session, user_id)
    return Response(status_code=204)
