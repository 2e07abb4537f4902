import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from services.webhooks.filters import is_valid_filter
from shared.text import Text

DeliveryStatus = Literal["pending", "succeeded", "failed"]

EVENT_TYPES_DESCRIPTION = (
    "Filters: `*`, a family such as `user.*`, or a type such as `user.created`"
)


def _not_null(value: object) -> object:
    """A PATCH may leave a field out; it may not null a field that cannot be empty."""
    if value is None:
        raise PydanticCustomError("not_null", "Cannot be null: leave the field out to keep it")
    return value


def _valid_filters(values: list[str]) -> list[str]:
    for value in values:
        if not is_valid_filter(value):
            raise ValueError(f"'{value}' is not an event type filter ({EVENT_TYPES_DESCRIPTION})")
    return list(dict.fromkeys(values))


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Text = Field(min_length=1, max_length=2048, description="An http or https URL")
    event_types: list[Text] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=100,
        description=EVENT_TYPES_DESCRIPTION,
    )
    description: Text = Field("", max_length=500)

    _filters = field_validator("event_types")(_valid_filters)


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Text | None = Field(None, min_length=1, max_length=2048)
    event_types: list[Text] | None = Field(None, min_length=1, max_length=100)
    description: Text | None = Field(None, max_length=500)
    enabled: bool | None = None

    _required = field_validator("url", "event_types", "description", "enabled")(_not_null)

    @field_validator("event_types")
    @classmethod
    def _filters(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _valid_filters(values)


class EndpointResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointResponse):
    secret: str = Field(description="`whsec_` + base64: verify signatures with it")
    previous_secret_expires_at: datetime | None = Field(
        None, description="Until then, the rotated-out secret signs too"
    )


class AttemptResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    attempted_at: datetime
    response_status: int | None
    response_body: str | None
    duration_ms: int
    error: str | None


class DeliveryResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    endpoint_id: uuid.UUID
    message_id: str = Field(description="The `webhook-id` header of every attempt")
    event_type: str
    status: DeliveryStatus
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    attempts: list[AttemptResponse]


class RecoverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime = Field(description="Re-send every failed message created since then")

    @field_validator("since")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("Give a time zone, e.g. 2026-01-01T00:00:00Z")
        return value


class RecoverResponse(BaseModel):
    recovered: int


class EventTypeResponse(BaseModel):
    type: str
    title: str
    description: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")

    model_config = ConfigDict(populate_by_name=True)
