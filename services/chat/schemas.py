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
DocumentIds = Annotated[list[uuid.UUID], Field(min_length=1, max_length=100)]
USE_DOCUMENTS = (
    "Answer from the user's own documents: the best passages found for the message are "
    "given to the model as numbered sources, and the reply lists them as `citations`"
)
DOCUMENT_IDS = "Search only these of the user's documents (all of them when unset)"


class UsageResponse(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class PromptRef(BaseModel):
    name: str
    version: int


class Citation(BaseModel):
    """A source the reply was given; the answer cites the n-th of them as [n]."""

    document_id: uuid.UUID
    title: str
    page: int | None = Field(description="The page of the passage, when the document has pages")
    snippet: str = Field(description="The passage, as plain text")


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
    use_documents: Boolean = Field(
        False, description=f"{USE_DOCUMENTS}; for the messages that do not say"
    )
    document_ids: DocumentIds | None = Field(None, description=DOCUMENT_IDS)


class ConversationUpdate(BaseModel):
    """PUT: the title and model are given; a prompt or document_ids left out are removed,
    use_documents left out is false."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    model: ModelId
    prompt: PromptName | None = None
    use_documents: Boolean = Field(
        False, description=f"{USE_DOCUMENTS}; for the messages that do not say"
    )
    document_ids: DocumentIds | None = Field(None, description=DOCUMENT_IDS)


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Omittable[Title] = None
    model: Omittable[ModelId] = None
    prompt: PromptName | None = None
    use_documents: Omittable[Boolean] = Field(
        None, description=f"{USE_DOCUMENTS}; for the messages that do not say"
    )
    document_ids: DocumentIds | None = Field(None, description=f"{DOCUMENT_IDS}; null: all")


class ConversationResponse(BaseModel):
    id: uuid.UUID
    title: str
    model: str
    prompt: str | None
    use_documents: bool
    document_ids: list[uuid.UUID] | None
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
    use_documents: Boolean | None = Field(
        None, description=f"{USE_DOCUMENTS}. Unset: as the conversation says"
    )
    document_ids: DocumentIds | None = Field(
        None, description=f"{DOCUMENT_IDS}. Unset: as the conversation says"
    )


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
    citations: list[Citation] = Field(
        description="The sources of a reply asked with use_documents, [1] first; else empty"
    )
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
    use_documents: Boolean | None = Field(
        None, description=f"{USE_DOCUMENTS}. Unset: as the conversation says (false for a new one)"
    )
    document_ids: DocumentIds | None = Field(
        None, description=f"{DOCUMENT_IDS}. Unset: as the conversation says"
    )


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
    citations: list[Citation] = Field(
        description="The sources the reply was given, [1] first; empty without use_documents"
    )


class HistoryEntry(BaseModel):
    id: uuid.UUID
    message: str
    response: str
    model: str
    citations: list[Citation]
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
