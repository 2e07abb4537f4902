import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.users.preferences import Language, TimeZone
from shared.emails import Email
from shared.fields import Boolean, Omittable
from shared.text import NotBlank, Text

Role = Literal["student", "instructor", "admin"]
UserSort = Literal["created_at", "name", "email", "role"]
Theme = Literal["light", "dark", "system"]
# 1 to 200 characters as sent, not only whitespace (as on register); stored stripped.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), NotBlank()]
# Auth's rules for a new password and for the current one: users checks them only so that
# a request auth would refuse is refused before it is sent.
NewPassword = Annotated[Text, StringConstraints(min_length=8, max_length=128)]
CurrentPassword = Annotated[Text, StringConstraints(min_length=1, max_length=128)]


class ProfileResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str = Field(description="The account's confirmed address")
    email_verified: bool = Field(description="Whether its owner has confirmed `email`")
    pending_email: str | None = Field(
        description="An address asked for (PUT or PATCH /users/me with `email`) that its owner "
        "has not confirmed yet; `email` changes once they do"
    )
    name: str
    role: str
    bio: str | None
    avatar_url: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ProfileFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    bio: Text | None = Field(None, max_length=5000)
    avatar_url: AnyHttpUrl | None = None


class ProfilePatchFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Omittable[Name] = None
    bio: Text | None = Field(None, max_length=5000)
    avatar_url: AnyHttpUrl | None = None


class EmailChange(BaseModel):
    email: Omittable[Email] = Field(
        None,
        description="A new address: auth mails it a confirmation link, and `email` changes "
        "(and `pending_email` clears) once its owner follows it. Left out or unchanged: "
        "nothing happens to the address",
    )
    current_password: Omittable[CurrentPassword] = Field(
        None, description="Required when `email` changes; not used otherwise"
    )


class ProfileUpdate(EmailChange, ProfilePatchFields):
    """What a user may change on their own profile. PUT replaces what may be empty (`bio`
    and `avatar_url` left out are cleared) and keeps `name` and `email` when left out."""


class ProfilePatch(EmailChange, ProfilePatchFields):
    """Only the fields given change; `bio` and `avatar_url` are the ones that null clears."""


class OwnerChangesEmail(BaseModel):
    """An admin does not change an account's email: its owner does, with their password.
    An `email` sent is refused as that field, with that reason."""

    @model_validator(mode="wrap")
    @classmethod
    def _email_is_the_owners(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if isinstance(data, dict) and "email" in data:
            error = PydanticCustomError(
                "email_changed_by_owner",
                "An admin cannot change an account's email: its owner does, with "
                "PUT or PATCH /api/v1/users/me and their current password",
            )
            raise ValidationError.from_exception_data(
                cls.__name__, [{"type": error, "loc": ("email",), "input": data["email"]}]
            )
        return handler(data)


class AdminUserUpdate(OwnerChangesEmail, ProfileFields):
    role: Role
    is_active: Boolean = True


class AdminUserPatch(OwnerChangesEmail, ProfilePatchFields):
    role: Omittable[Role] = None
    is_active: Omittable[Boolean] = None


class UserCreate(BaseModel):
    """An account for someone else, created by an admin."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    name: Name
    role: Role = "student"
    password: Omittable[NewPassword] = Field(
        None,
        description="Left out: the new user is mailed a link to set a password of their own",
    )


class PreferencesResponse(BaseModel):
    """Every preference: the user's own where they set one, otherwise its default."""

    language: str = Field(description="A BCP 47 language tag")
    timezone: str = Field(description="An IANA time zone name")
    theme: Theme
    email_notifications: bool


class PreferencesUpdate(BaseModel):
    """PUT: every preference left out goes back to its default."""

    model_config = ConfigDict(extra="forbid")

    language: Language = "en"
    timezone: TimeZone = "UTC"
    theme: Theme = "system"
    email_notifications: Boolean = True


class PreferencesPatch(BaseModel):
    """PATCH: only the preferences given change."""

    model_config = ConfigDict(extra="forbid")

    language: Omittable[Language] = None
    timezone: Omittable[TimeZone] = None
    theme: Omittable[Theme] = None
    email_notifications: Omittable[Boolean] = None
