import uuid
from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from shared.text import Text

Role = Literal["student", "instructor", "admin"]


def _not_null(value: object) -> object:
    """A PATCH may leave a field out; it may not null a field that cannot be empty."""
    if value is None:
        raise PydanticCustomError("not_null", "Cannot be null: leave the field out to keep it")
    return value


def _not_blank(value: str | None) -> str | None:
    """Names are stored stripped; one that is only whitespace is refused, as on register."""
    if value is None:
        return value
    value = value.strip()
    if not value:
        raise ValueError("Name must not be blank")
    return value


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

    name: Text = Field(min_length=1, max_length=200)
    bio: Text | None = Field(None, max_length=5000)
    avatar_url: AnyHttpUrl | None = None

    _name_not_blank = field_validator("name")(_not_blank)


class ProfilePatch(BaseModel):
    """Only the fields given change; `bio` and `avatar_url` are the ones that null clears."""

    model_config = ConfigDict(extra="forbid")

    name: Text | None = Field(None, min_length=1, max_length=200)
    bio: Text | None = Field(None, max_length=5000)
    avatar_url: AnyHttpUrl | None = None

    _name_required = field_validator("name")(_not_null)
    _name_not_blank = field_validator("name")(_not_blank)


class AdminUserUpdate(ProfileUpdate):
    role: Role
    is_active: bool = True


class AdminUserPatch(ProfilePatch):
    role: Role | None = None
    is_active: bool | None = None

    _required = field_validator("role", "is_active")(_not_null)
