import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from shared.fields import Integer
from shared.text import Text

DocumentStatus = Literal["processing", "ready", "failed"]
# The fields the document list sorts by.
DocumentSort = Literal["created_at", "title", "size"]


def content_url(document_id: uuid.UUID) -> str:
    return f"/api/v1/documents/{document_id}/content"


class DocumentResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    filename: str = Field(description="The uploaded file's name, cleaned")
    title: str
    size: int = Field(description="Bytes")
    mime_type: str = Field(description="Decided from the content, never from the client")
    sha256: str = Field(description="Hex SHA-256 of the stored bytes")
    status: DocumentStatus = Field(
        description="`processing` until its text is extracted, then `ready` or `failed`"
    )
    failure_reason: str | None = Field(description="Why processing failed")
    page_count: int | None = Field(description="Pages of a PDF; null for other types")
    chunk_count: int = Field(description="Passages indexed for search")
    created_at: datetime
    updated_at: datetime
    processed_at: datetime | None

    @computed_field(description="Where its bytes are downloaded (always as an attachment)")  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return content_url(self.id)


class FileResponse(BaseModel):
    """A document as the file API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    filename: str
    size: int
    mime_type: str
    created_at: datetime

    @computed_field(description="Where its bytes are downloaded")  # type: ignore[prop-decorator]
    @property
    def url(self) -> str:
        return content_url(self.id)


class FileList(BaseModel):
    files: list[FileResponse]
    total: int
    limit: int
    offset: int


class FileDeleted(BaseModel):
    message: str = "File deleted successfully"


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Text = Field(
        min_length=1,
        max_length=500,
        description='Web-search syntax: words (all must match), "a phrase", -excluded, or',
    )
    limit: Integer = Field(default=10, ge=1, le=50)
    document_ids: list[uuid.UUID] | None = Field(
        default=None, max_length=100, description="Search only these documents"
    )


class SearchResult(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    document_id: uuid.UUID
    title: str
    chunk_id: uuid.UUID
    page: int | None = Field(description="The PDF page the passage is on; null for other types")
    score: float = Field(description="Relevance; higher is better, comparable within one answer")
    snippet: str = Field(
        description="The passage around the matches as HTML: the text escaped, each match "
        "wrapped in <mark>"
    )
