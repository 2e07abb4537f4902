import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.auth.api_tokens import MAX_TTL_DAYS
from shared.emails import Email
from shared.fields import Integer
from shared.text import NonBlankText, Text

SelfServiceRole = Literal["student", "instructor"]
Role = Literal["student", "instructor", "admin"]
NEW_PASSWORD: dict[str, Any] = {"min_length": 8, "max_length": 128}
GIVEN_PASSWORD: dict[str, Any] = {"min_length": 1, "max_length": 128}
MAILED_TOKEN: dict[str, Any] = {
    "min_length": 1,
    "max_length": 512,
    "description": "The `token` of the link in the mail",
}


class RegisterRequest(BaseModel):
    email: Email
    password: Text = Field(**NEW_PASSWORD)
    name: NonBlankText = Field(min_length=1, max_length=200)
    role: SelfServiceRole = "student"


class LoginRequest(BaseModel):
    email: Email
    password: Text = Field(**GIVEN_PASSWORD)


class RefreshRequest(BaseModel):
    refresh_token: Text = Field(min_length=1, max_length=512)


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int


class AccountResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str
    role: str
    email_verified: bool
    is_active: bool
    created_at: datetime


class RegisterResponse(BaseModel):
    """The new account, signed in."""

    user: AccountResponse
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires")


class AccountCreate(BaseModel):
    email: Email
    name: NonBlankText = Field(min_length=1, max_length=200)
    role: Role = "student"
    password: Text | None = Field(
        None,
        **NEW_PASSWORD,
        description="Left out: the new user gets a mail with a link to choose one",
    )


class TokenRequest(BaseModel):
    token: Text = Field(**MAILED_TOKEN)


class ForgotPasswordRequest(BaseModel):
    email: Email


class PasswordResetRequest(BaseModel):
    token: Text = Field(**MAILED_TOKEN)
    new_password: Text = Field(**NEW_PASSWORD)


class PasswordChangeRequest(BaseModel):
    current_password: Text = Field(**GIVEN_PASSWORD)
    new_password: Text = Field(**NEW_PASSWORD)


class EmailChangeRequest(BaseModel):
    new_email: Email
    current_password: Text = Field(**GIVEN_PASSWORD)


class Accepted(BaseModel):
    message: str


class EmailChangePending(Accepted):
    pending_email: str = Field(description="Becomes the account's address once confirmed")


class ApiTokenCreate(BaseModel):
    name: NonBlankText = Field(min_length=1, max_length=100, description="What the token is for")
    expires_in_days: Integer = Field(90, ge=1, le=MAX_TTL_DAYS)


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
