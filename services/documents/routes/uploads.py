"""What the two upload routes share: the body read as a stream (`Request.stream()`), never
spooled by the framework, and so declared here for the OpenAPI document."""

from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.documents.deps import DocumentsCollaborators
from services.documents.models import Document
from services.documents.service import documents
from services.documents.upload import MAX_TITLE_CHARS
from shared.openapi import error_responses
from shared.security import Identity
from shared.text import WITHOUT_NUL


async def upload_from(
    request: Request,
    session: AsyncSession,
    collaborators: DocumentsCollaborators,
    identity: Identity,
) -> Document:
    content_type = request.headers.get("content-type", "")
    return await documents.upload(session, collaborators, identity, request.stream(), content_type)


def multipart_body(*, with_title: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The file: PDF, text, Markdown, HTML, DOCX, CSV or JSON",
        }
    }
    if with_title:
        properties["title"] = {
            "type": "string",
            "maxLength": MAX_TITLE_CHARS,
            "pattern": WITHOUT_NUL,
        }
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": properties}
                }
            },
        }
    }


UPLOAD_ERRORS = error_responses(413, 415)
