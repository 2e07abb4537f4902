import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from services.auth.api_tokens import MAX_TTL_DAYS
from shared.fields import Integer
from shared.text import NonBlankText, Text

SelfServiceRole = Literal["student", "instructor"]


class RegisterRequest(BaseModel):
    email: EmailStr
    password: Text = Field(min_length=8, max_length=128)
    name: NonBlankText = Field(min_length=1, max_length=200)
    role: SelfServiceRole = "student"

    @field_validator("email")
    @classmethod
    def normalise_email(cls, value: str) -> str:
        return value.strip().lower()


class LoginRequest(BaseModel):
    email: EmailStr
    password: Text = Field(min_length=1, max_length=128)

    @field_validator("email")
    @classmethod
    def normalise_email(cls, value: str) -> str:
        return value.strip().lower()


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
    is_active: bool
    created_at: datetime


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
