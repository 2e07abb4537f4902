import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.fields import Boolean, Integer, Number, Omittable
from shared.text import NotBlank, Text

PROMPT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
LABEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,49}$"

Title = Annotated[str, StringConstraints(max_length=200), NotBlank()]
ModelId = Annotated[str, StringConstraints(min_length=1, max_length=200), NotBlank()]
PromptName = Annotated[str, StringConstraints(pattern=PROMPT_NAME_PATTERN)]
Label = Annotated[str, StringConstraints(pattern=LABEL_PATTERN)]
Temperature = Annotated[Number, Field(ge=0, le=2)]
MaxTokens = Annotated[Integer, Field(ge=1, le=1_000_000)]
MAX_MESSAGE_CHARS = 32_000
MessageText = Annotated[str, StringConstraints(max_length=MAX_MESSAGE_CHARS), NotBlank()]
ConversationSort = Literal["last_activity_at", "created_at", "title"]
MessageStatus = Literal["generating", "completed", "stopped", "failed"]


class UsageResponse(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class PromptRef(BaseModel):
    name: str
    version: int


# --- models ---


class ModelResponse(BaseModel):
    id: str
    owned_by: str
    context_window: int
    default: bool
    description: str | None = None


class ModelList(BaseModel):
    data: list[ModelResponse]


# --- conversations ---


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    model: ModelId | None = Field(None, description="A model id from GET /api/v1/models")
    prompt: PromptName | None = Field(None, description="The name of a system prompt")


class ConversationUpdate(BaseModel):
    """PUT: the title and model are given; a prompt left out is removed."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    model: ModelId
    prompt: PromptName | None = None


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Omittable[Title] = None
    model: Omittable[ModelId] = None
    prompt: PromptName | None = None


class ConversationResponse(BaseModel):
    id: uuid.UUID
    title: str
    model: str
    prompt: str | None
    message_count: int
    usage: UsageResponse
    current_message_id: uuid.UUID | None
    last_activity_at: datetime
    created_at: datetime
    updated_at: datetime


# --- messages ---


class ReplyOptions(BaseModel):
    """How one reply is generated; `stream` (or `Accept: text/event-stream`) answers with
    Server-Sent Events."""

    model_config = ConfigDict(extra="forbid")

    model: ModelId | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    stream: Boolean = False


class MessageCreate(ReplyOptions):
    content: MessageText


class MessageEdit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: MessageText


class MessageResponse(BaseModel):
    id: uuid.UUID
    conversation_id: uuid.UUID
    role: str
    content: str
    parent_id: uuid.UUID | None
    model: str
    status: MessageStatus
    usage: UsageResponse
    finish_reason: str | None
    prompt: PromptRef | None
    created_at: datetime
    updated_at: datetime


class Exchange(BaseModel):
    user_message: MessageResponse
    assistant_message: MessageResponse


# --- the simple API ---


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: MessageText
    model: ModelId | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    conversation_id: uuid.UUID | None = None
    stream: Boolean = False


class ChatResponse(BaseModel):
    """Also the `chat_response` event of a stream, where `finish_reason` matters most."""

    id: uuid.UUID
    message: str
    model: str
    usage: UsageResponse
    conversation_id: uuid.UUID
    created_at: datetime
    finish_reason: str | None
    prompt: PromptRef | None


class HistoryEntry(BaseModel):
    id: uuid.UUID
    message: str
    response: str
    model: str
    created_at: datetime


class HistoryPage(BaseModel):
    messages: list[HistoryEntry]
    total: int
    limit: int
    offset: int


class UsagePeriod(BaseModel):
    period: Literal["day"]
    period_start: datetime
    resets_at: datetime
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    tokens_used: int
    limit: int = Field(description="Tokens per day; 0 means no limit")
    remaining: int | None


# --- prompts ---


class PromptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: PromptName
    content: Annotated[str, StringConstraints(max_length=100_000), NotBlank()]
    description: Annotated[Text, StringConstraints(max_length=2000)] | None = None


class PromptVersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Annotated[str, StringConstraints(max_length=100_000), NotBlank()]


class LabelMove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[Integer, Field(ge=1)]


class PromptVersionResponse(BaseModel):
    name: str
    version: int
    content: str
    labels: list[str]
    created_at: datetime


class PromptResponse(BaseModel):
    """A prompt as one of its versions (the `production` one unless asked otherwise)."""

    name: str
    description: str | None
    version: int
    content: str
    labels: list[str]
    latest_version: int
    all_labels: dict[str, int]
    created_at: datetime
    updated_at: datetime


class PromptSummary(BaseModel):
    name: str
    description: str | None
    latest_version: int
    labels: dict[str, int]
    created_at: datetime
    updated_at: datetime


class LabelResponse(BaseModel):
    name: str
    label: str
    version: int


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
