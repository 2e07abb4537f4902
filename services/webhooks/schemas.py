import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.webhooks.filters import FILTER_PATTERN, is_valid_filter
from shared.fields import Boolean, DateTime, Omittable
from shared.text import JsonSchemaPattern, Text

DeliveryStatus = Literal["pending", "succeeded", "failed"]

EVENT_TYPES_DESCRIPTION = (
    "Filters: `*`, a family such as `user.*`, or a type such as `user.created`"
)


def _valid_filters(values: list[str]) -> list[str]:
    for value in values:
        if not is_valid_filter(value):
            raise ValueError(f"'{value}' is not an event type filter ({EVENT_TYPES_DESCRIPTION})")
    return list(dict.fromkeys(values))


# Checked when the endpoint is saved: the host must resolve, and only to public addresses
# (or to WEBHOOK_ALLOWED_NETWORKS), which no schema can say.
URL_DESCRIPTION = (
    "An http or https URL whose host resolves only to public addresses; "
    "credentials in the URL are refused"
)
EndpointUrl = Annotated[
    Text, JsonSchemaPattern(r"^[hH][tT][tT][pP][sS]?://[^\x00]+$", replace=True)
]
EventTypeFilter = Annotated[Text, JsonSchemaPattern(FILTER_PATTERN.pattern, replace=True)]


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: EndpointUrl = Field(min_length=1, max_length=2048, description=URL_DESCRIPTION)
    event_types: list[EventTypeFilter] = Field(
        default_factory=lambda: ["*"],
        min_length=1,
        max_length=100,
        description=EVENT_TYPES_DESCRIPTION,
    )
    description: Text = Field("", max_length=500)

    _filters = field_validator("event_types")(_valid_filters)


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Omittable[EndpointUrl] = Field(
        None, min_length=1, max_length=2048, description=URL_DESCRIPTION
    )
    event_types: Omittable[list[EventTypeFilter]] = Field(
        None, min_length=1, max_length=100, description=EVENT_TYPES_DESCRIPTION
    )
    description: Omittable[Text] = Field(None, max_length=500)
    enabled: Omittable[Boolean] = None

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

    since: DateTime = Field(description="Re-send every failed message created since then")

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
