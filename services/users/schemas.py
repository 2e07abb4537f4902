import uuid
from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

Role = Literal["student", "instructor", "admin"]


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

    name: str = Field(min_length=1, max_length=200)
    bio: str | None = Field(None, max_length=5000)
    avatar_url: AnyHttpUrl | None = None


class ProfilePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    bio: str | None = Field(None, max_length=5000)
    avatar_url: AnyHttpUrl | None = None


class AdminUserUpdate(ProfileUpdate):
    role: Role
    is_active: bool = True


class AdminUserPatch(ProfilePatch):
    role: Role | None = None
    is_active: bool | None = None
