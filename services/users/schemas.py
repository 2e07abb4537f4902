import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StringConstraints

from shared.fields import Boolean, Omittable
from shared.text import NotBlank, Text

Role = Literal["student", "instructor", "admin"]
UserSort = Literal["created_at", "name", "email", "role"]
# 1 to 200 characters as sent, not only whitespace (as on register); stored stripped.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), NotBlank()]


class ProfileResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str
    role: str
    bio: str | None
    avatar_url: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ProfileUpdate(BaseModel):
    """What a user may change on their own profile (PUT replaces, PATCH merges)."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    bio: Text | None = Field(None, max_length=5000)
    avatar_url: AnyHttpUrl | None = None


class ProfilePatch(BaseModel):
    """Only the fields given change; `bio` and `avatar_url` are the ones that null clears."""

    model_config = ConfigDict(extra="forbid")

    name: Omittable[Name] = None
    bio: Text | None = Field(None, max_length=5000)
    avatar_url: AnyHttpUrl | None = None


class AdminUserUpdate(ProfileUpdate):
    role: Role
    is_active: Boolean = True


class AdminUserPatch(ProfilePatch):
    role: Omittable[Role] = None
    is_active: Omittable[Boolean] = None
